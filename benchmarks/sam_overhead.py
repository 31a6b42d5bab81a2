"""Inference overhead of UniFusion-SAM over plain SAM, per image, on Meta's SAM vit_b (random weights).

Baseline: ``SamPredictor.set_image(img)`` + ``SamPredictor.predict(point)`` (one full image encode and
decode). Measured against it, on the same image and in the same run:

- ``text``: ``model.predict(img, text=...)`` (image encode + sentence encode + UniFusion + decode);
- ``video``: one video step with two mask references, the first frame and the previous frame, whose
  embeddings are already in the predictor's EmbeddingCache (as when the same arrays come back on the
  next frame): ``model.predict(frame_t, ref_images=[frame_0, frame_prev], ref_masks=[m_0, m_prev])``;
  the query frame is encoded (the cache is emptied of it before every call), and both masks are
  encoded again on every call;
- ``step``: the same step as tracking does it, ``VideoSession.step(frame_t)`` for one object: the
  first-frame reference was encoded once when the mask was given (the session keeps it), the step
  encodes the frame and the previous prediction's reference, fuses both references and decodes.

Goal: both ratios <= 1.10. Every call of a round is timed in turn (baseline, then each adapter option),
for ``--repeats`` rounds; the ratio is the median (and best) time over the baseline's median (best),
in process CPU time (robust when other jobs share the machine; with one thread it is the compute
time) and in wall time. Then a breakdown of where the time goes (each stage timed alone).

Options: the ``sam-vit-b`` preset (UniFusion 8 x 32 heads, reference resized to half of SAM's input
before ResNet-18: 256 at input 512, 512 at 1024), the same with the reference at 512 / 256 / 128, and the authors' design
``sam-vit-b-authors`` (8 x 256 heads, reference at full input resolution). Keys are always the
full-resolution SAM embeddings of the reference frames.

    python benchmarks/sam_overhead.py [--full] [--repeats 3] [--threads 1]
    python benchmarks/sam_overhead.py --family sam2 [--repeats 3]

``--full`` uses SAM's real input size 1024 (default 512, 4x cheaper). ``--family sam2`` measures the same
on SAM 2 (Meta ``sam2``, a ``sam2_hiera_t``-sized model with random weights, always at its real input size
1024) against SAM 2's own ``SAM2ImagePredictor.set_image`` + ``predict(point)``, with the ``sam2-hiera-tiny``
preset (references pooled to 32 x 32 tokens, ``reference_pool`` 2, reference image at 256: what SAM vit_b at
input 512 has; and at 512) and with the full 64 x 64 grid (``reference_pool`` 1, reference at 512: the
preset before).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from unifusion_sam.fusion import ReferenceTokens  # noqa: E402
from unifusion_sam.inference import VideoSession  # noqa: E402
from unifusion_sam.sam import build_sam, wrap_sam  # noqa: E402

TEXT = "the red car on the left behind the truck"


def frame(t: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of a small synthetic video (a disc moving right over a textured background) and its mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    base = (rng.integers(0, 60, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w] + 80).astype(np.uint8)
    img = base + ((xx + 3 * t) % 40).astype(np.uint8)[..., None]
    cx, cy, r = w * 0.3 + 6 * t, h * 0.5, min(h, w) * 0.15
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    img[mask] = (200, 30, 30)
    return img, mask


def timed(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def best_of(fn, n: int = 2) -> float:
    """Best process-CPU seconds of ``n`` calls after a warm-up."""
    fn()
    return min(timed(fn)[1] for _ in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="input size 1024 instead of 512")
    parser.add_argument("--family", choices=("sam", "sam2"), default="sam",
                        help="sam: Meta SAM vit_b (default); sam2: Meta SAM 2 hiera-tiny at 1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable on a shared machine; 0 = torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sam2 = args.family == "sam2"
    size = 1024 if args.full or sam2 else 512
    h, w = size * 3 // 4, size  # a 4:3 image whose long side is SAM's input size
    torch.manual_seed(0)
    sam = build_sam("sam2_hiera_t" if sam2 else "vit_b", image_size=size)

    options = {
        "sam-vit-b (8x32, ref = input/2)": dict(adapter="sam-vit-b"),
        "sam-vit-b, ref 512": dict(adapter="sam-vit-b", mask={"input_size": 512}),
        "sam-vit-b, ref 256": dict(adapter="sam-vit-b", mask={"input_size": 256}),
        "sam-vit-b, ref 128": dict(adapter="sam-vit-b", mask={"input_size": 128}),
        "authors (8x256, ref full)": dict(adapter="sam-vit-b-authors"),
    }
    if sam2:
        options = {
            "sam2-hiera-tiny (ref 256)": dict(adapter="sam2-hiera-tiny"),
            "sam2-hiera-tiny, ref 512": dict(adapter="sam2-hiera-tiny", mask={"input_size": 512}),
            "full grid (pool 1), ref 512": dict(adapter="sam2-hiera-tiny", reference_pool=1, mask={"input_size": 512}),
        }
    models = {}
    for name, kwargs in options.items():
        torch.manual_seed(0)
        models[name] = wrap_sam(sam, **kwargs).eval()

    if sam2:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        plain = SAM2ImagePredictor(sam)
        plain._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]  # sam2 hard-codes those of 1024
    else:
        from segment_anything import SamPredictor

        plain = SamPredictor(sam)
    frames = [frame(t, h, w) for t in range(args.repeats + 3)]
    img = frames[0][0]
    point = dict(point_coords=np.array([[w * 0.3, h * 0.5]]), point_labels=np.array([1]))

    def baseline():
        plain.set_image(img)
        plain.predict(**point, multimask_output=False)

    def text_call(model):
        model.predictor.cache.clear()  # a full image encode every call
        model.predict(img, text=TEXT)

    def video_call(model, t):
        (f0, m0), (fp, mp), (ft, _) = frames[0], frames[t - 1], frames[t]
        model.predictor.cache.clear()
        # the first and previous frames were encoded before: cached (under the task predict gives
        # mask-only references, "fss", which is part of the cache key)
        model.predictor.embed(f0, task="fss")
        model.predictor.embed(fp, task="fss")
        return timed(lambda: model.predict(ft, ref_images=[f0, fp], ref_masks=[m0, mp]))

    sessions = {}

    def session_call(name, model, t):
        # a VideoSession step on frame t: the object's first-frame reference was encoded when it was
        # given (cached in the session); the step encodes frame t, the previous prediction's reference,
        # fuses both references and decodes
        if name not in sessions:
            session = VideoSession(model, sigma=0.0)
            session.add_object(1, frames[0][1])
            session.step(frames[0][0])
            sessions[name] = session
        session = sessions[name]
        model.predictor.cache.clear()  # frame t is new (the previous frame's features are in the session)
        return timed(lambda: session.step(frames[t][0]))

    with torch.inference_mode():
        baseline()  # warm-up
        for name, model in models.items():
            text_call(model)
            video_call(model, 2)
            session_call(name, model, 1)
        base_t, text_t, video_t = [], {n: [] for n in models}, {n: [] for n in models}
        step_t = {n: [] for n in models}
        for r in range(args.repeats):
            base_t.append(timed(baseline))
            for name, model in models.items():
                text_t[name].append(timed(lambda: text_call(model)))  # noqa: B023
                video_t[name].append(video_call(model, r + 2))
                step_t[name].append(session_call(name, model, r + 2))

    print(f"{'SAM 2 hiera-tiny' if sam2 else 'SAM vit_b'}, random weights, input {size} (image {w} x {h}), "
          f"{torch.get_num_threads()} thread(s), "
          f"{args.repeats} rounds; load average {os.getloadavg()[0]:.1f}")
    for k, clock in enumerate(("process CPU time", "wall time")):
        base = [b[k] for b in base_t]
        print(f"\n[{clock}] baseline {type(plain).__name__}.set_image + predict(point): "
              f"median {statistics.median(base) * 1e3:.0f} ms, best {min(base) * 1e3:.0f} ms")
        print(f"{'option':<28}{'text median':>12}{'text best':>11}{'video median':>14}{'video best':>12}"
              f"{'step median':>13}{'step best':>11}   (ratio to plain SAM)")
        for name in models:
            text, video = [t[k] for t in text_t[name]], [v[k] for v in video_t[name]]
            step = [v[k] for v in step_t[name]]
            cells = []
            for times in (text, video, step):
                cells += [statistics.median(times) / statistics.median(base), min(times) / min(base)]
            print(f"{name:<28}" + "".join(f"{c:>{wd}.3f}" for c, wd in zip(cells, (12, 11, 14, 12, 13, 11))))
    print("goal: <= 1.10")

    # ------------------------------------------------------------------ where the time goes
    print("\nwhere the time goes: ms of process CPU time per stage (each stage alone, best of 2)")
    columns = ["mask trunk", "mask fusers", "fusion(mask)", "text enc", "fusion(text)", "decode+tok",
               "video extra", "text extra"]
    with torch.inference_mode():
        first = next(iter(models.values()))
        pred = first.predictor
        (f0, m0), (fp, mp) = frames[0], frames[1]
        _, p0, f0_features = pred.embed(f0)
        _, p1, f1_features = pred.embed(fp)
        # the image embeddings (SAM 2: without the high-resolution maps, which go to the decoder as they are)
        e0, e1 = first.backend.image_embedding(f0_features), first.backend.image_embedding(f1_features)
        extras = first.backend.decoder_inputs(f0_features)
        coords = torch.tensor(first.transform.coords(point["point_coords"], (h, w)), dtype=torch.float)[None]
        labels = torch.ones(1, 1, dtype=torch.int)
        encode_ms = best_of(lambda: first.encode_image(p0.pixels)) * 1e3
        decode_ms = best_of(lambda: first.decode(e0, point_coords=coords, point_labels=labels, extras=extras)) * 1e3
        print(f"plain SAM: image encoder {encode_ms:.0f} ms, prompt encoder + mask decoder {decode_ms:.1f} ms")
        print("'video extra' / 'text extra': the stages a video step / text call adds, minus SAM's decode, "
              "as % of encode + decode")
        print(f"{'option':<28}" + "".join(f"{c:>13}" for c in columns))
        units = torch.cat([p0.unit, p1.unit])
        masks = torch.cat([first.transform.mask(m0), first.transform.mask(mp)])
        emb = torch.cat([e0, e1])
        for name, model in models.items():
            enc = model.mask_encoder
            cfg = enc.config

            def trunk(enc=enc, cfg=cfg):
                image, mask = units, masks[:, None]
                if cfg.input_size is not None and max(image.shape[2:]) != cfg.input_size:
                    image = F.interpolate(image, size=(cfg.input_size,) * 2, mode="bilinear", align_corners=False)
                    mask = F.interpolate(mask, size=(cfg.input_size,) * 2, mode="bilinear", align_corners=False)
                return enc.trunk_features(image, mask)[16]

            pool = model.config.reference_pool  # the grid the mask encoder fuses on
            grid = F.avg_pool2d(emb, pool) if pool > 1 else emb
            ref = model.encode_mask_reference(units, masks, emb)
            tokens = ReferenceTokens(ref.levels[0].keys.reshape(1, -1, 256), ref.levels[0].values.reshape(1, -1, 256))
            words = model.encode_text([TEXT])
            lang = ReferenceTokens(words.words, words.words, words.padding_mask)
            token = model.reference_token(None, None, ref.prototype.mean(0, keepdim=True), torch.ones(1, dtype=torch.bool))
            ms = {
                "mask trunk": best_of(trunk),
                "mask encoder": best_of(lambda: enc(units, masks, [grid])),  # noqa: B023
                "fusion(mask)": best_of(lambda: model.fuse(e0, None, tokens)),  # noqa: B023
                "text enc": best_of(lambda: model.encode_text([TEXT])),  # noqa: B023
                "fusion(text)": best_of(lambda: model.fuse(e0, lang, None)),  # noqa: B023
                "decode+tok": best_of(lambda: model.decode(e0, token, point_coords=coords, point_labels=labels,  # noqa: B023
                                                           extras=extras)),
            }
            ms = {k: v * 1e3 for k, v in ms.items()}
            ms["mask fusers"] = ms.pop("mask encoder") - ms["mask trunk"]  # the fusion blocks (and resizes)
            extra_dec = ms["decode+tok"] - decode_ms
            video = ms["mask trunk"] + ms["mask fusers"] + ms["fusion(mask)"] + extra_dec
            text = ms["text enc"] + ms["fusion(text)"] + extra_dec
            cells = [f"{ms[c]:>13.1f}" for c in columns[:6]]
            cells += [f"{100 * v / (encode_ms + decode_ms):>12.1f}%" for v in (video, text)]
            print(f"{name:<28}" + "".join(cells))

if __name__ == "__main__":
    main()
