"""Trainable / total parameters of UniFusion-SAM for the vit_b / vit_l / vit_h and SAM 2 hiera
tiny / small / base+ / large presets, LoRA off and on.

SAM is built with random weights on PyTorch's ``meta`` device (shapes only, no memory: vit_h alone
would be 2.5 GB of fp32), then wrapped with ``wrap_sam(sam, adapter=preset)``; the adapter parts
(UniFusion, mask encoder, text encoder, tokens, LoRA) are ordinary modules. Counting needs only
shapes, so the numbers equal those of a real model (``--check`` builds vit_b on the CPU and compares).
SAM 2 is counted as ``transformers.Sam2Model`` (Meta's ``sam2`` cannot be built on the ``meta`` device):
the same image encoder, prompt encoder and mask decoder, so the same trainable parameters; its total
leaves out Meta ``SAM2Base``'s video-memory modules, which an image adapter never uses (``--check`` also
builds Meta's ``sam2_hiera_t`` on the CPU and compares the trainable count). SAM 2's ``conv_s0`` /
``conv_s1`` (decoder projections of the high-resolution features) stay frozen.

    python benchmarks/trainable_fraction.py [--check]

Columns: trainable and total parameters (SAM counted once, adapter included), the trainable
percentage, and the trainable parts in millions: UniFusion, mask reference encoder, text transformer,
text projection + reference tokens, SAM's mask decoder, LoRA.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from unifusion_sam.sam import SAM2_SPECS, build_hf_sam, build_sam, load_preset, wrap_sam  # noqa: E402

PRESETS = ["sam-vit-b", "sam-vit-b-lora", "sam-vit-l", "sam-vit-l-lora", "sam-vit-h", "sam-vit-h-lora",
           "sam2-hiera-tiny", "sam2-hiera-tiny-lora", "sam2-hiera-small", "sam2-hiera-small-lora",
           "sam2-hiera-base-plus", "sam2-hiera-base-plus-lora", "sam2-hiera-large", "sam2-hiera-large-lora"]


def _count(params, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def parts(model) -> dict[str, int]:
    """Trainable parameters per part of the adapter."""
    named = dict(model.named_parameters())
    out = {
        "fusion": _count(model.fusion.parameters()),
        "mask enc": _count(model.mask_encoder.parameters()),
        "text tf": 0,
        "proj+tok": _count(model.mask_token.parameters()),
        "decoder": _count(model.backend.mask_decoder.parameters()),  # SAM 2's conv_s0/s1 are frozen: not counted
        "lora": _count(p for n, p in named.items() if "lora_" in n),
    }
    if model.text_encoder is not None:
        out["text tf"] = _count(model.text_encoder.backbone.parameters())
        out["proj+tok"] += _count(model.text_encoder.proj.parameters()) + _count(model.text_token.parameters())
    return out


def count(preset: str, device: str = "meta", sam2_family: str = "hf"):
    """Counts for ``preset``; a SAM 2 preset is counted on a ``transformers.Sam2Model`` (``sam2_family="hf"``)
    or on Meta's ``SAM2Base`` (``"meta"``: CPU only)."""
    config = load_preset(preset)
    with torch.device(device):
        if config.sam_size in SAM2_SPECS and sam2_family == "hf":
            sam = build_hf_sam(config.sam_size)
        else:
            sam = build_sam(config.sam_size)
    model = wrap_sam(sam, adapter=preset)
    trainable, total = model.num_parameters()
    return trainable, total, parts(model), model.config.lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="also build vit_b on the CPU and compare the counts")
    args = parser.parse_args()

    names = ["fusion", "mask enc", "text tf", "proj+tok", "decoder", "lora"]
    header = f"{'preset':<27}{'LoRA':<14}{'trainable':>13}{'total':>15}{'trainable %':>13}  " + "".join(
        f"{n + ' (M)':>13}" for n in names)
    print(header)
    print("-" * len(header))
    for preset in PRESETS:
        trainable, total, p, lora = count(preset)
        lora_text = f"r={lora.r} {'+'.join(lora.targets)}" if lora.enabled else "off"
        assert sum(p.values()) == trainable, (preset, p, trainable)  # the parts add up to the total
        print(f"{preset:<27}{lora_text:<14}{trainable:>13,d}{total:>15,d}{100 * trainable / total:>12.2f}%  "
              + "".join(f"{p[n] / 1e6:>13.3f}" for n in names))
    print("\nSAM's image and prompt encoders are frozen; the text transformer is all-MiniLM-L6-v2 (trainable in the")
    print("image stage per the presets). Without it (text={'trainable': False}) the trainable share drops to:")
    for preset in ("sam-vit-b", "sam-vit-h", "sam2-hiera-tiny", "sam2-hiera-large"):
        trainable, total, p, _ = count(preset)
        print(f"  {preset}: {trainable - p['text tf']:,d} / {total:,d} = {100 * (trainable - p['text tf']) / total:.2f}%")
    if args.check:
        meta = count("sam-vit-b-lora")[:2]
        cpu = count("sam-vit-b-lora", device="cpu")[:2]
        print(f"\ncheck sam-vit-b-lora built on cpu: {cpu} == meta {meta}: {cpu == meta}")
        assert cpu == meta
        hf = count("sam2-hiera-tiny-lora")[0]
        meta_sam2 = count("sam2-hiera-tiny-lora", device="cpu", sam2_family="meta")
        print(f"check sam2-hiera-tiny-lora trainable on Meta sam2 (cpu): {meta_sam2[0]:,d} == transformers "
              f"Sam2Model {hf:,d}: {meta_sam2[0] == hf} (Meta total with the video-memory modules: {meta_sam2[1]:,d})")
        assert meta_sam2[0] == hf


if __name__ == "__main__":
    main()
