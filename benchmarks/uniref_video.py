"""The full UniRef++-R50 tracking video on this CPU: where a frame's time goes, objects, memory (issue #13).

Random weights (timing and memory do not depend on them), the authors' R50 architecture with the
offline MiniLM text encoder, frames resized by the model to a 480 short side (the authors' video
protocol), one VOS session (first + previous frame references, the shared ``VideoSession``).

- ``deformable``: share of a tracked frame's time spent in multi-scale deformable attention (the core
  sampling function, all 12 encoder / decoder layers), for the pure-PyTorch reference backend and
  for transformers' ``MultiScaleDeformableAttention`` (the fast path: its ``kernels`` integration
  swaps in a CUDA kernel; on a CPU it runs the same PyTorch operations). Also prints UniFusion's share.
- ``objects``: time per frame with 4 objects / with 1 object (all objects of a frame in one batched
  forward; the authors run one forward per object, about 4x). Two sessions step through the same
  frames alternately so both see the same machine load; median over the timed frames.
- ``memory``: peak RSS after frame 300 / after frame 30 (``VmHWM``), and the bytes held by the session's
  state. 300 frames at 480p take hours on this CPU, so this part runs at ``--memory-short-side``
  (default 160): the state's size does not depend on the number of frames at any resolution.

    python benchmarks/uniref_video.py [--parts deformable objects memory] [--threads 2] [--frames 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from video_memory import proc_status, state_bytes


def build(short_side: int):
    from unifusion_sam.uniref import build_uniref
    from unifusion_sam.uniref.modeling.config import TaskSizes

    torch.manual_seed(0)
    return build_uniref("uniref-r50", text={"model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2"},
                        video_sizes=TaskSizes(short_side, 1333).to_dict())


def clip(n_frames: int, size=(480, 854), objects: int = 4):
    from unifusion_sam.data.synthetic import SyntheticConfig, sample_video

    config = SyntheticConfig(image_size=size, num_frames=n_frames, min_video_objects=objects, max_video_objects=objects,
                             late_entry_prob=0.0)
    return sample_video(config, "heldout", 0)


class Timer:
    """Wall time spent inside a wrapped function (module attribute or method)."""

    def __init__(self, owner, attr: str) -> None:
        self.owner, self.attr, self.real, self.total = owner, attr, getattr(owner, attr), 0.0

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        setattr(owner, attr, timed)

    def restore(self) -> None:
        setattr(self.owner, self.attr, self.real)


def deformable(frames: int) -> None:
    import unifusion_sam.uniref.modeling.deformable as deform
    from unifusion_sam.fusion.unifusion import UniFusion
    from unifusion_sam.inference.session import VideoSession

    model = build(480)
    spec = clip(frames + 2, objects=1)
    rows = []
    for backend in ("pytorch", "transformers"):
        model.transformer.set_backend(backend)
        session = VideoSession(model, sigma=0.4)
        _, labels = spec.render(0)
        session.add_object(1, labels == 1)
        for t in range(2):  # frame 0: the given mask; frame 1: warm-up
            session.step(spec.render(t)[0])
        msda, fusion = Timer(deform, "ms_deform_attn"), Timer(UniFusion, "fuse")
        start = time.perf_counter()
        for t in range(2, frames + 2):
            session.step(spec.render(t)[0])
        total = time.perf_counter() - start
        msda.restore()
        fusion.restore()
        rows.append((backend, total / frames, msda.total / frames, fusion.total / frames))
    print("\nR50, 480p, 1 object: time per tracked frame and the part spent in deformable attention")
    for backend, total, msda, fusion in rows:
        print(f"  {backend:12s} frame {total:7.2f} s | deformable attention {msda:6.2f} s = {100 * msda / total:5.1f} % "
              f"| UniFusion {fusion:6.2f} s = {100 * fusion / total:5.1f} %")
    (_, t0, m0, _), (_, t1, m1, _) = rows
    print(f"RATIO deformable share, pytorch / transformers: {(m0 / t0) / (m1 / t1):.3f} "
          f"(deformable time {m0 / m1:.3f}x)")


def objects(frames: int) -> None:
    from unifusion_sam.inference.session import VideoSession

    model = build(480)
    spec = clip(frames + 2, objects=4)
    _, labels = spec.render(0)
    sessions = {}
    for n in (1, 4):
        sessions[n] = VideoSession(model, sigma=0.4)
        for k in range(1, n + 1):
            sessions[n].add_object(k, labels == k)
    per_frame = {1: [], 4: []}
    for t in range(frames + 2):
        frame = spec.render(t)[0]
        for n, session in sessions.items():
            model.predictor.cache.clear()  # each session encodes its frames itself
            start = time.perf_counter()
            session.step(frame)
            if t >= 2:
                per_frame[n].append(time.perf_counter() - start)
    one, four = statistics.median(per_frame[1]), statistics.median(per_frame[4])
    print(f"\nR50, 480p: time per frame 1 object {one:.2f} s | 4 objects {four:.2f} s")
    print(f"RATIO time per frame 4 objects / 1 object: {four / one:.3f}  (goal <= 1.5; one forward per object: ~4)")


def memory(frames: int, early: int, short_side: int) -> None:
    from unifusion_sam.inference.session import VideoSession

    model = build(short_side)
    spec = clip(frames, size=(480, 854), objects=2)
    _, labels = spec.render(0)
    session = VideoSession(model, sigma=0.4)
    session.add_object(1, labels == 1)
    session.add_object(2, labels == 2)
    marks = {}
    start = time.perf_counter()
    for t in range(frames):
        frame, _ = spec.render(t)
        session.step(frame)
        if t + 1 in (early, frames):
            marks[t + 1] = (proc_status("VmHWM"), proc_status("VmRSS"), *state_bytes(session))
    mib = 2**20
    print(f"\nR50, frames 480x854 resized to a {short_side} short side, 2 objects, "
          f"{(time.perf_counter() - start) / frames:.2f} s/frame")
    for n, (hwm, rss, count, nbytes) in marks.items():
        print(f"  after frame {n:4d}: VmHWM {hwm / mib:8.1f} MiB  VmRSS {rss / mib:8.1f} MiB  "
              f"session state {count} tensors, {nbytes / mib:.2f} MiB")
    (hwm0, rss0, _, b0), (hwm1, rss1, _, b1) = marks[early], marks[frames]
    print(f"RATIO peak RSS (VmHWM {frames} / {early}): {hwm1 / hwm0:.4f}  (goal <= 1.05); "
          f"current RSS {rss1 / rss0:.4f}; session state {b1 / b0:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["deformable", "objects", "memory"],
                        choices=["deformable", "objects", "memory"])
    parser.add_argument("--frames", type=int, default=2, help="timed frames (deformable, objects)")
    parser.add_argument("--memory-frames", type=int, default=300)
    parser.add_argument("--memory-early", type=int, default=30)
    parser.add_argument("--memory-short-side", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU")
    if "deformable" in args.parts:
        deformable(args.frames)
    if "objects" in args.parts:
        objects(args.frames)
    if "memory" in args.parts:
        memory(args.memory_frames, args.memory_early, args.memory_short_side)


if __name__ == "__main__":
    main()
