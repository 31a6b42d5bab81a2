"""Memory of an online video session over a long video: peak RSS after frame 300 / after frame 30.

Setting (issue #4): the tiny SAM (``build_sam("tiny")`` + ``wrap_sam``), a synthetic video whose
frames are rendered one at a time (nothing is held but the current frame), two objects given on
frame 0, ``VideoSession.step`` per frame. The session keeps a fixed-size state (first reference and
previous mask per object, the previous frame's embedding), so memory must not grow with the frames.

It prints, after frame 30 and after the last frame, the process's resident high-water mark
(``VmHWM`` from ``/proc/self/status``; on CPU torch has no allocator statistics, so RSS it is), the
current RSS (``VmRSS``) and the bytes of tensors held in the session's state, then the ratios.
Goal: ``VmHWM(300) / VmHWM(30) <= 1.05``.

    python benchmarks/video_memory.py [--frames 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch


def proc_status(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def state_bytes(session) -> tuple[int, int]:
    """(number, total bytes) of the tensors and arrays reachable from the session's state."""
    seen: dict[int, object] = {}

    def walk(obj):
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            seen[id(obj)] = obj
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name))

    walk({k: v for k, v in vars(session).items() if k not in ("model", "transform")})
    total = sum(t.numel() * t.element_size() if isinstance(t, torch.Tensor) else t.nbytes for t in seen.values())
    return len(seen), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--early", type=int, default=30, help="the frame the final memory is compared with")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from unifusion_sam.data.synthetic import SyntheticConfig, sample_video
    from unifusion_sam.inference import VideoSession
    from unifusion_sam.sam import build_sam, wrap_sam

    model = wrap_sam(build_sam("tiny")).eval()
    config = SyntheticConfig(image_size=args.size, num_frames=args.frames, min_video_objects=2, max_video_objects=2,
                             late_entry_prob=0.0)
    spec = sample_video(config, "heldout", 0)  # trajectories only; frames are rendered on demand
    session = VideoSession(model, sigma=0.4)
    _, labels = spec.render(0)
    session.add_object(1, labels == 1)
    session.add_object(2, labels == 2)

    marks = {}
    start = time.perf_counter()
    for t in range(args.frames):
        frame, _ = spec.render(t)
        session.step(frame)
        del frame
        if t + 1 in (args.early, args.frames):
            marks[t + 1] = (proc_status("VmHWM"), proc_status("VmRSS"), *state_bytes(session))
    elapsed = time.perf_counter() - start

    mib = 2**20
    print(f"tiny SAM, {args.frames} frames of {args.size}x{args.size}, 2 objects, {args.threads} thread(s), "
          f"{elapsed / args.frames * 1000:.0f} ms/frame")
    for n, (hwm, rss, count, nbytes) in marks.items():
        print(f"after frame {n:4d}: VmHWM {hwm / mib:8.1f} MiB  VmRSS {rss / mib:8.1f} MiB  "
              f"session state {count} tensors, {nbytes / mib:.2f} MiB")
    early, late = marks[args.early], marks[args.frames]
    print(f"peak RSS ratio (VmHWM {args.frames} / {args.early}): {late[0] / early[0]:.4f}  (goal <= 1.05)")
    print(f"current RSS ratio (VmRSS {args.frames} / {args.early}): {late[1] / early[1]:.4f}")
    print(f"session state ratio (bytes {args.frames} / {args.early}): {late[3] / early[3]:.4f}")


if __name__ == "__main__":
    main()
