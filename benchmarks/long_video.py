"""Memory of ``unifusion-sam track`` on a long video: the peak resident memory after the last frame over the
peak after frame 300 (goal: at most 1.05), with every output complete.

It writes a long synthetic MP4 (default 10,000 frames of 320 x 240: shapes moving over a background), then
runs the command line on it, as a user would, in a subprocess (default model: the random tiny SAM, which
is about the pipeline's memory, not its masks; ``--checkpoint`` takes any model), and reads the process's
peak resident set (``VmHWM``) from ``/proc`` when its 300th and its last mask PNG appear, and every ten
seconds in between (the ``curve`` in the report). ``wait4``'s ``ru_maxrss`` at exit is reported beside it,
not compared: it also covers the interpreter's teardown after the last frame (about 1 GiB on a 2-core AMD
EPYC, after 200 frames as after 10,000) and the peaks of its children (the ffmpeg reader and writer). Then
it checks the outputs: one palette PNG per frame and an MP4 with every frame.

    python benchmarks/long_video.py                     # 10,000 frames: about 20 minutes on a 2-core CPU
    python benchmarks/long_video.py --frames 2000 --json long_video.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: int, size: tuple[int, int], fps: float = 25.0) -> np.ndarray:
    """A long synthetic MP4 (the held-out generator's shapes bouncing around); returns frame 0's label map."""
    from unifusion_sam.data.synthetic import SyntheticConfig, sample_video
    from unifusion_sam.data.video import Mp4Writer

    config = SyntheticConfig(seed=1000, image_size=size, num_frames=frames, late_entry_prob=0.0,
                             min_video_objects=2, max_video_objects=3)
    spec = sample_video(config, "heldout", 0)
    with Mp4Writer(path, fps=fps) as writer:
        for t in range(frames):
            writer.write(spec.render(t)[0])
    return spec.labels(0)


def _status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field of a running process (KiB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_kib(pid: int) -> int:
    """``VmHWM``, the peak resident set of a running process (KiB), 0 when it is gone."""
    return _status_kib(pid, "VmHWM")


def current_kib(pid: int) -> int:
    """``VmRSS``, the resident set of a running process now (KiB), 0 when it is gone."""
    return _status_kib(pid, "VmRSS")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--early", type=int, default=300, help="the frame the later peak is compared with")
    parser.add_argument("--workdir", type=Path, default=None, help="where the video and outputs go (default: a temp dir)")
    parser.add_argument("--checkpoint", default="none", help="the model (default: the random tiny SAM)")
    parser.add_argument("--sam", default="tiny")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="long-video-"))
    work.mkdir(parents=True, exist_ok=True)
    video = work / "long.mp4"
    tic = time.perf_counter()
    first = write_video(video, args.frames, (240, 320))
    from unifusion_sam.data.io import save_palette_png

    save_palette_png(work / "first.png", first)
    print(f"wrote {video} ({args.frames} frames, {video.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - tic:.0f} s")

    out = work / "out"
    cmd = [sys.executable, "-m", "unifusion_sam", "track", str(video), "--mask", str(work / "first.png"),
           "--out-dir", str(out), "--no-overlays", "--checkpoint", args.checkpoint, "--device", "cpu"]
    if args.checkpoint == "none":
        cmd += ["--sam", args.sam]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tic = time.perf_counter()
    log = work / "track.log"
    curve = []  # (frames written, VmHWM, VmRSS in KiB) every few seconds: where memory grows, if it does
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        masks = out / "masks"
        early_png, last_png = masks / f"{args.early - 1:05d}.png", masks / f"{args.frames - 1:05d}.png"
        early = last = 0
        sampled = 0.0
        while True:  # wait4 reaps the process with its resource usage (ru_maxrss: teardown and children too)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not early and early_png.exists():
                early = peak_kib(proc.pid)
                print(f"frame {args.early}: peak RSS {early / 1024:.0f} MiB after {time.perf_counter() - tic:.0f} s",
                      flush=True)
            if early and not last and last_png.exists():
                last = peak_kib(proc.pid)  # the process's own peak once the last frame is written
            if time.perf_counter() - sampled > 10:
                sampled = time.perf_counter()
                done = sum(1 for _ in os.scandir(masks)) if masks.is_dir() else 0
                curve.append((done, peak_kib(proc.pid), current_kib(proc.pid)))
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"track failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    final = last or usage.ru_maxrss
    pngs = len(list((out / "masks").glob("*.png")))
    import imageio.v3 as iio

    mp4_frames = sum(1 for _ in iio.imiter(out / "track.mp4"))
    report = {"frames": args.frames, "peak_after_early_mib": early / 1024, "peak_after_last_mib": final / 1024,
              "ratio": final / early if early else None, "pngs": pngs, "mp4_frames": mp4_frames,
              "ru_maxrss_mib": usage.ru_maxrss / 1024, "seconds": time.perf_counter() - tic,
              "curve": [{"frames": f, "peak_mib": round(p / 1024, 1), "rss_mib": round(r / 1024, 1)}
                        for f, p, r in curve]}
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    print(f"peak RSS after frame {args.frames} / after frame {args.early}: {report['ratio']:.3f} (goal <= 1.05); "
          f"{pngs} PNGs and {mp4_frames} MP4 frames of {args.frames}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
