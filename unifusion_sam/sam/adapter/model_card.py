"""The model card (``README.md``) written next to a UniFusion-SAM adapter checkpoint.

It has YAML front matter for the Hugging Face Hub (``library_name: unifusion-sam``, tags, the base SAM
when it is a published one), then what the adapter was made for and contains, a usage snippet, the
recorded metrics as a table, and the full adapter configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...checkpoint.card import card_tail, render_card
from ..builders import CUSTOM_SAMS
from ..specs import HUB_SAM2_IDS, HUB_SAM_IDS, META_SAM2_FILES, META_SAM_FILES, SAM2_SPECS, SAM_SPECS
from .config import UniFusionSamConfig

TAGS = [
    "unifusion-sam",
    "segment-anything",
    "image-segmentation",
    "referring-image-segmentation",
    "few-shot-segmentation",
    "video-object-segmentation",
    "referring-video-object-segmentation",
    "peft",
]
FAMILY_NAMES = {"meta": "Meta `segment_anything` `Sam`", "hf": "`transformers.SamModel`",
                "meta_sam2": "Meta `sam2` `SAM2Base` (SAM 2)", "hf_sam2": "`transformers.Sam2Model` (SAM 2)"}


def _usage(config: UniFusionSamConfig, repo_id: str) -> str:
    size, family = config.sam_size, config.sam_family
    specs = {**{k: v.image_size for k, v in SAM_SPECS.items()}, **{k: v.image_size for k, v in CUSTOM_SAMS.items()},
             **{k: v.image_size for k, v in SAM2_SPECS.items()}}
    default_size = specs.get(size)
    image_arg = "" if config.image_size == default_size else f", image_size={config.image_size}"
    if family == "meta_sam2":
        ckpt = META_SAM2_FILES.get(size, "sam2_checkpoint.pt")
        build = ["from unifusion_sam import UniFusionSam, build_sam", "",
                 f'sam = build_sam("{size}", checkpoint="{ckpt}"{image_arg})  # the SAM 2 this adapter was trained on']
    elif family == "hf_sam2" and size in HUB_SAM2_IDS and config.image_size == 1024:
        build = ["from transformers import Sam2Model", "from unifusion_sam import UniFusionSam", "",
                 f'sam = Sam2Model.from_pretrained("{HUB_SAM2_IDS[size]}")']
    elif family == "meta":
        ckpt = META_SAM_FILES.get(size, "sam_checkpoint.pth")
        build = ["from unifusion_sam import UniFusionSam, build_sam", "",
                 f'sam = build_sam("{size}", checkpoint="{ckpt}"{image_arg})  # the SAM this adapter was trained on']
    elif size in HUB_SAM_IDS and config.image_size == 1024:
        build = ["from transformers import SamModel", "from unifusion_sam import UniFusionSam", "",
                 f'sam = SamModel.from_pretrained("{HUB_SAM_IDS[size]}")']
    else:
        build = ["from unifusion_sam import UniFusionSam, build_hf_sam", "",
                 f'sam = build_hf_sam("{size}"{image_arg})  # load the weights this adapter was trained on']
    lines = build + [f'model = UniFusionSam.from_pretrained("{repo_id}", sam=sam)', ""]
    if config.text is not None:
        lines.append('pred = model.predict(image, text="the dog on the left")           # referring segmentation')
    lines.append("pred = model.predict(image, ref_images=[image0], ref_masks=[mask0])  # few-shot / mask reference")
    lines.append("pred.mask, pred.score")
    return "```python\n" + "\n".join(lines) + "\n```"


def render_model_card(
    config: UniFusionSamConfig,
    metrics: Mapping[str, Any],
    *,
    repo_id: str,
    parts: list[str],
    num_parameters: int,
    num_bytes: int,
    library_version: str,
) -> str:
    """The full ``README.md`` text of an adapter checkpoint."""
    front: dict[str, Any] = {"library_name": "unifusion-sam", "tags": list(TAGS), "pipeline_tag": "image-segmentation"}
    hub_ids = HUB_SAM2_IDS if config.sam_family in ("meta_sam2", "hf_sam2") else HUB_SAM_IDS
    if config.sam_size in hub_ids and config.image_size == 1024:
        front["base_model"] = hub_ids[config.sam_size]
        front["base_model_relation"] = "adapter"
    text_line = "none (mask references only)"
    if config.text is not None:
        how = "fine-tuned, weights included" if config.text.trainable else "frozen, loaded from its id"
        text_line = f"`{config.text.model_name_or_path}` ({how})"
    lora = config.lora
    lora_line = f"rank {lora.r}, alpha {lora.alpha} on {', '.join(lora.targets)}" if lora.enabled else "off"
    title = f"UniFusion-SAM adapter `{repo_id}`"
    body = [
        f"# {title}",
        "",
        "A UniFusion-SAM adapter (library `unifusion-sam`): reference-based segmentation on a frozen Segment Anything "
        "(UniRef++'s UniFusion on the SAM image embedding). One model segments from a sentence (RIS), from "
        "support image/mask pairs (few-shot), and tracks objects in video from a first-frame mask or a sentence "
        "(VOS / RVOS); point and box prompts keep working.",
        "",
        "This checkpoint holds the adapter only; SAM's frozen weights are not included and must be given at load time.",
        "",
        "## Base model",
        "",
        "| | |",
        "| --- | --- |",
        f"| SAM implementation | {FAMILY_NAMES.get(config.sam_family, config.sam_family)} (`sam_family: {config.sam_family}`) |",
        f"| SAM size | `{config.sam_size}` |",
        f"| input size | {config.image_size} |",
        f"| text encoder | {text_line} |",
        f"| LoRA on the image encoder | {lora_line} |",
        f"| mask decoder | {'fine-tuned, weights included' if config.train_mask_decoder else 'frozen (SAM original)'} |",
        "",
        f"Adapter contents: {', '.join(f'`{p}`' for p in parts)}; {num_parameters:,d} values, "
        f"{num_bytes / 2**20:.1f} MiB (`adapter_model.safetensors`). Made with unifusion-sam {library_version}.",
        "",
        "## Usage",
        "",
        _usage(config, repo_id),
        "",
        *card_tail(metrics, config.to_json(), "adapter_config.json"),
    ]
    return render_card(front, body)
