"""Cost of tracking several objects: time per frame with 4 objects / with 1 object (issue #4).

All objects of a frame share one image encode and go through one batched forward, so extra objects
should cost far less than extra frames. Goal: ratio <= 1.5.

Settings (random weights; timing does not depend on them):

- ``tiny``: ``build_sam("tiny")`` (input 256) + ``wrap_sam``, frames 192 x 256;
- ``vit_b``: Meta SAM ViT-B at input 512 (``build_sam("vit_b", image_size=512)`` + ``wrap_sam``,
  the ``sam-vit-b`` adapter preset), frames 384 x 512.

A synthetic video with 4 objects; one session tracks object 1 only, another objects 1..4 (masks given
on frame 0). Frame 0 (given masks) and frame 1 (warm-up) are not timed; then the two sessions step
through the same frames alternately, so both see the same machine load. Time per frame = median over
the timed frames. The per-stage profile (mean ms per frame) wraps the network's stages:
``encode_image``; ``mask_encoder (prev)`` = ``encode_mask_reference`` of the previous frame's masks
(one batch of N); ``fuse`` = UniFusion; ``decode`` = SAM's mask decoder with the reference token;
``post+aggregate`` = upsampling the logits and soft aggregation; ``other`` = the rest of ``step``
(preprocessing, grouping references, state updates).

    python benchmarks/multi_object.py [--models tiny vit_b] [--frames 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

STAGES = ("encode_image", "mask_encoder (prev)", "fuse", "decode", "post+aggregate")
SETTINGS = {"tiny": (None, (192, 256)), "vit_b": (512, (384, 512))}


class StageTimer:
    """Accumulates wall time per stage by wrapping instance attributes (methods) of the given objects."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, owner, attr: str, stage: str) -> None:
        real = getattr(owner, attr)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.totals[stage] += time.perf_counter() - start

        setattr(owner, attr, timed)


def measure(name: str, frames_timed: int, counts=(1, 4)) -> dict:
    from unifusion_sam.data.synthetic import SyntheticConfig, sample_video
    from unifusion_sam.inference import VideoSession
    from unifusion_sam.sam import build_sam, wrap_sam

    image_size, frame_size = SETTINGS[name]
    torch.manual_seed(0)
    model = wrap_sam(build_sam(name, image_size=image_size)).eval()
    n_frames = frames_timed + 2
    config = SyntheticConfig(image_size=frame_size, num_frames=n_frames, min_video_objects=4, max_video_objects=4,
                             late_entry_prob=0.0)
    spec = sample_video(config, "heldout", 0)
    frames, labels = zip(*(spec.render(t) for t in range(n_frames)))

    timer = StageTimer()
    timer.wrap(model, "encode_image", "encode_image")
    timer.wrap(model, "fuse", "fuse")
    timer.wrap(model, "decode", "decode")
    import unifusion_sam.inference.session as session_module

    timer.wrap(session_module, "aggregate", "post+aggregate")  # the soft aggregation, shared by both sessions
    sessions = {}
    for n in counts:
        session = VideoSession(model, sigma=0.4)
        for k in range(1, n + 1):
            session.add_object(k, labels[0] == k)
        sessions[n] = session
    timer.wrap(model.transform, "postprocess", "post+aggregate")  # shared by both sessions

    # previous-frame references: encode_mask_reference runs once per frame inside _predict (given masks
    # are encoded on frame 0 only, which is not timed)
    timer.wrap(model, "encode_mask_reference", "mask_encoder (prev)")

    for t in range(2):  # frame 0: given masks; frame 1: warm-up
        for session in sessions.values():
            session.step(frames[t])
    per_frame = {n: [] for n in counts}
    stages = {n: defaultdict(float) for n in counts}
    for t in range(2, n_frames):
        for n, session in sessions.items():
            timer.totals.clear()
            start = time.perf_counter()
            session.step(frames[t])
            elapsed = time.perf_counter() - start
            per_frame[n].append(elapsed)
            for stage in STAGES:
                stages[n][stage] += timer.totals[stage] / frames_timed
            stages[n]["other"] += (elapsed - sum(timer.totals[s] for s in STAGES)) / frames_timed
    return {"per_frame": {n: statistics.median(v) for n, v in per_frame.items()}, "stages": stages,
            "image_size": model.image_size, "frame_size": frame_size, "counts": counts}


def report(name: str, result: dict) -> None:
    lo, hi = result["counts"]
    t = result["per_frame"]
    print(f"\n{name}: SAM input {result['image_size']}, frames {result['frame_size'][0]}x{result['frame_size'][1]}")
    print(f"  time per frame: {lo} object {t[lo] * 1000:8.1f} ms | {hi} objects {t[hi] * 1000:8.1f} ms")
    print(f"  {'stage (mean ms/frame)':24s} {lo:>10d} obj {hi:>10d} obj {'extra per added object':>24s}")
    for stage in (*STAGES, "other"):
        a, b = result["stages"][lo][stage] * 1000, result["stages"][hi][stage] * 1000
        print(f"  {stage:24s} {a:14.1f} {b:14.1f} {(b - a) / (hi - lo):24.1f}")
    print(f"  ratio {name}: time per frame {hi} objects / {lo} object = {t[hi] / t[lo]:.3f}  (goal <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--frames", type=int, default=4, help="timed frames per session")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, {args.frames} timed frames")
    results = {name: measure(name, args.frames) for name in args.models}
    for name, result in results.items():
        report(name, result)
    print()
    for name, result in results.items():
        t = result["per_frame"]
        print(f"RATIO {name}: {t[4] / t[1]:.3f}")


if __name__ == "__main__":
    main()
