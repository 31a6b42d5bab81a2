"""Convert the authors' UniRef++ checkpoints (their detectron2 layout) into this library's layout.

``convert_authors_checkpoint("uniref_r50.pth", "out/")`` (or ``unifusion-sam convert-uniref``) reads the
file without unpickling arbitrary objects (``torch.load(weights_only=True)``: tensors and plain
containers only; anything else is refused with the offending global named), maps every key
(:func:`convert_authors_state_dict`), loads the result strictly into a freshly built model and writes
the ``save_pretrained`` format. The architecture is read from the tensors' shapes (backbone, widths,
depths, queries, the text encoder's size); the text encoder's tokenizer and configuration come from
``text_encoder`` (``bert-base-uncased`` for the released checkpoints) and must fit the shapes.

Keys that carry no information of their own are checked and dropped: the tied duplicates
``detr.detr.class_embed.*`` / ``detr.detr.bbox_embed.*`` (the same tensors as the decoder's), BERT's
``position_ids`` (``arange``), Swin's ``relative_position_index`` (an architecture constant,
recomputed), detectron2 ``num_batches_tracked`` counters and ``criterion._iter`` (a training counter).
Any other key that maps nowhere, and any key of the model that nothing fills, is an error listing them.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import listing, read_weights
from ..encoders.text import TextEncoderConfig
from .modeling.config import UniRefConfig, _authors_fusion, _authors_mask

PREFIX_BACKBONE = "detr.detr.backbone.0.backbone."
SWIN_EMBED_DIMS = {96: "swin_t", 128: "swin_b", 192: "swin_l"}

# (authors' prefix, ours): plain renames, longest prefix first
_RENAMES = [
    ("detr.detr.transformer.decoder.bbox_embed.", "bbox_embed."),
    ("detr.detr.transformer.decoder.class_embed.", "class_embed."),
    ("detr.detr.transformer.", "transformer."),
    ("detr.detr.query_embed.", "query_embed."),
    ("detr.detr.input_proj.", "input_proj."),
    ("detr.detr.iou_head.", "iou_head."),
    ("detr.lateral_conv.", "mask_features.lateral."),
    ("detr.output_conv.", "mask_features.output."),
    ("detr.mask_conv.", "mask_features.project."),
    ("detr.mask_head.lay1.", "mask_features.reduce1."),
    ("detr.mask_head.lay2.", "mask_features.reduce2."),
    ("detr.mask_head.lay3.", "mask_features.conv32."),
    ("detr.mask_head.lay4.", "mask_features.conv16."),
    ("detr.mask_head.jia_dcn.", "mask_features.conv8."),
    ("detr.controller.", "controller."),
    ("detr.fusion_module.norm_v.", "fusion.norm_q."),
    ("detr.fusion_module.norm_l.", "fusion.norm_k."),
    ("detr.fusion_module.attn.", "fusion."),
    ("detr.fusion_module.adaLN_modulation.", "fusion.modulation."),
    ("resizer.fc.", "text_encoder.proj.0."),
    ("resizer.layer_norm.", "text_encoder.proj.1."),
    ("text_encoder.", "text_encoder.backbone."),
    ("value_encoder.final_layer.0.", "mask_encoder.extra."),
    ("value_encoder.final_layer.1.", "mask_encoder.extra_norm."),
]


class ConversionError(ValueError):
    """The checkpoint does not fit the UniRef++ layout (the message lists what does not)."""


# ------------------------------------------------------------------ reading the file safely
def read_authors_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of a detectron2 checkpoint (``.pth``), or a ``.safetensors`` state dict.
    Never unpickles anything but tensors and plain containers."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_weights(path)[0]
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a non-tensor object ({found.group(1)})" if found else "something that is not tensors and plain containers"
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))  # torch's reason, after its boilerplate
        reason = detail.group(1) if detail else (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{path} contains {what}; unifusion-sam only reads tensors, numbers, strings and "
                         f"containers from a pickle and never unpickles arbitrary objects ({type(exc).__name__}: "
                         f"{reason.strip()[:300]})") from exc
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]  # detectron2: {"model": ..., "trainer": ..., "iteration": ...}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} does not hold a state dict (found {type(data).__name__})")
    bad = sorted(str(k) for k, v in data.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path}: state dict values must be tensors; not tensors: {listing(sorted(bad), 25)}")
    return dict(data)


# ------------------------------------------------------------------ architecture from shapes
def infer_config(state: Mapping[str, torch.Tensor], text_encoder: str = "bert-base-uncased") -> UniRefConfig:
    """A :class:`UniRefConfig` whose layout matches the authors' ``state`` (shapes and counts)."""
    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m.group(1) for k in state for m in [rx.match(k)] if m})

    required = ["detr.detr.transformer.level_embed", "detr.detr.query_embed.weight",
                "detr.detr.transformer.decoder.class_embed.0.weight", "detr.controller.layers.2.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise ConversionError(f"not a two-stage UniRef++ checkpoint (mixed query selection): missing {missing}"
                              + ("; single-stage models (reference_points) are not supported"
                                 if "detr.detr.transformer.reference_points.weight" in state else ""))
    if f"{PREFIX_BACKBONE}stem.conv1.weight" in state:
        blocks = count(re.escape(PREFIX_BACKBONE) + r"res4\.(\d+)\.")
        if blocks != 6:
            raise ConversionError(f"ResNet backbone with {blocks} res4 blocks: only ResNet-50 (6) is supported")
        backbone = "resnet50"
    elif f"{PREFIX_BACKBONE}patch_embed.proj.weight" in state:
        dim = int(state[f"{PREFIX_BACKBONE}patch_embed.proj.weight"].shape[0])
        backbone = SWIN_EMBED_DIMS.get(dim)
        if backbone is None:
            raise ConversionError(f"Swin backbone with embed_dim {dim}: supported {sorted(SWIN_EMBED_DIMS)}")
        if backbone == "swin_t" and count(re.escape(PREFIX_BACKBONE) + r"layers\.2\.blocks\.(\d+)\.") == 18:
            backbone = "swin_s"
    else:
        raise ConversionError(f"unknown backbone: no {PREFIX_BACKBONE}stem.* (ResNet) or patch_embed.* (Swin) keys")
    levels, hidden = state["detr.detr.transformer.level_embed"].shape
    if levels != 4:
        raise ConversionError(f"expected 4 feature levels, found {levels}")
    ffn = int(state["detr.detr.transformer.encoder.layers.0.linear1.weight"].shape[0])
    enc_aw = state["detr.detr.transformer.encoder.layers.0.self_attn.attention_weights.weight"].shape[0]
    dec_aw = state["detr.detr.transformer.decoder.layers.0.cross_attn.attention_weights.weight"].shape[0]
    num_heads = 8  # the authors' NHEADS; the points per head follow from the attention-weight shapes
    fusion_inner = int(state["detr.fusion_module.attn.q_proj.weight"].shape[0])
    mask_dim = int(state["detr.mask_conv.weight"].shape[0])
    text = None
    if "resizer.fc.weight" in state:
        text = TextEncoderConfig(model_name_or_path=text_encoder, max_length=77, dim=int(hidden), dropout=0.1,
                                 trainable=False, layer_norm_eps=1e-12, padding="max_length")
    fusion = _authors_fusion()
    fusion.dim, fusion.head_dim = int(hidden), fusion_inner // fusion.num_heads
    mask = _authors_mask()
    mask.dim = mask.visual_dim = int(hidden)
    dyn = int(state["detr.controller.layers.2.weight"].shape[0])
    dynamic = 8
    if (mask_dim + 2) * dynamic + dynamic * dynamic + 3 * dynamic + 1 != dyn:
        raise ConversionError(f"controller generates {dyn} parameters, which fits no 3-layer dynamic head of width 8 "
                              f"on {mask_dim} mask channels")
    return UniRefConfig(
        backbone=backbone, hidden_dim=int(hidden), num_heads=num_heads, ffn_dim=ffn,
        enc_layers=count(r"detr\.detr\.transformer\.encoder\.layers\.(\d+)\."),
        dec_layers=count(r"detr\.detr\.transformer\.decoder\.layers\.(\d+)\."),
        enc_points=int(enc_aw) // (num_heads * 4), dec_points=int(dec_aw) // (num_heads * 4),
        num_queries=int(state["detr.detr.query_embed.weight"].shape[0]),
        num_classes=int(state["detr.detr.transformer.decoder.class_embed.0.weight"].shape[0]),
        mask_dim=mask_dim, dynamic_channels=dynamic, iou_branch="detr.detr.iou_head.0.weight" in state,
        fusion=fusion, text=text, mask=mask,
    )


# ------------------------------------------------------------------ key mapping
def _backbone_key(rest: str, backbone: str) -> str | None:
    """The authors' backbone key (after the prefix) -> ours, or None to drop a constant buffer."""
    if backbone == "resnet50":
        if rest.endswith("num_batches_tracked"):
            return None
        m = re.match(r"stem\.conv1\.(norm\.)?(\w+)$", rest)
        if m:
            return f"backbone.body.{'bn1' if m.group(1) else 'conv1'}.{m.group(2)}"
        m = re.match(r"res(\d)\.(\d+)\.(conv(\d)|shortcut)\.(norm\.)?(\w+)$", rest)
        if not m:
            return "?" + rest
        stage, block, kind, conv_index, norm, name = m.groups()
        where = f"backbone.body.layer{int(stage) - 1}.{block}."
        if kind == "shortcut":
            return where + f"downsample.{1 if norm else 0}.{name}"
        return where + (f"bn{conv_index}.{name}" if norm else f"conv{conv_index}.{name}")
    if rest.endswith("relative_position_index"):
        return None
    if rest.startswith("patch_embed.proj."):
        return "backbone.features.0.0." + rest.rsplit(".", 1)[1]
    if rest.startswith("patch_embed.norm."):
        return "backbone.features.0.2." + rest.rsplit(".", 1)[1]
    m = re.match(r"norm(\d)\.(\w+)$", rest)
    if m:
        return f"backbone.out_norms.{m.group(1)}.{m.group(2)}"
    m = re.match(r"layers\.(\d)\.downsample\.(.+)$", rest)
    if m:
        return f"backbone.features.{2 + 2 * int(m.group(1))}.{m.group(2)}"
    m = re.match(r"layers\.(\d)\.blocks\.(\d+)\.(.+)$", rest)
    if m:
        inner = m.group(3).replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
        return f"backbone.features.{1 + 2 * int(m.group(1))}.{m.group(2)}.{inner}"
    return "?" + rest


def _mask_encoder_key(rest: str) -> str:
    m = re.match(r"fuser(\d)\.(.+)$", rest)
    if not m:
        return "mask_encoder." + rest  # conv1, bn1, layer1..4: torchvision names
    inner = (m.group(2).replace("block1.downsample.", "block1.shortcut.")
             .replace("attention.ChannelGate.mlp.1.", "attention.mlp.0.")
             .replace("attention.ChannelGate.mlp.3.", "attention.mlp.2.")
             .replace("attention.SpatialGate.spatial.conv.", "attention.spatial."))
    return f"mask_encoder.fusers.{int(m.group(1)) - 2}.{inner}"


def convert_authors_state_dict(state: Mapping[str, torch.Tensor], config: UniRefConfig) -> dict[str, torch.Tensor]:
    """Map every key of the authors' ``state`` to this library's layout (see the module docstring)."""
    out: dict[str, torch.Tensor] = {}
    unmapped, untied = [], []
    for key, value in state.items():
        if key == "criterion._iter" or key.endswith("embeddings.position_ids"):
            if key.endswith("position_ids") and not torch.equal(value.flatten().long(), torch.arange(value.numel())):
                raise ConversionError(f"{key} is not arange({value.numel()}): not a standard BERT buffer")
            continue
        m = re.match(r"detr\.detr\.(class_embed|bbox_embed)\.(.+)$", key)
        if m:  # tied: the same module as the decoder's
            twin = f"detr.detr.transformer.decoder.{m.group(1)}.{m.group(2)}"
            if twin not in state or not torch.equal(state[twin], value):
                untied.append(key)
            continue
        if key.startswith(PREFIX_BACKBONE):
            ours = _backbone_key(key[len(PREFIX_BACKBONE):], config.backbone)
            if ours is None:
                continue
        elif key.startswith("value_encoder.") and not key.startswith("value_encoder.final_layer."):
            ours = _mask_encoder_key(key[len("value_encoder."):])
        else:
            ours = next((new + key[len(old):] for old, new in _RENAMES if key.startswith(old)), "?" + key)
        if ours.startswith("?"):
            unmapped.append(key)
            continue
        if key.endswith("num_batches_tracked") and value.numel() == 1:
            value = value.reshape(())  # a BatchNorm counter saved as [1] by some writers
        out[ours] = value
    if unmapped or untied:
        lines = ["the checkpoint has keys that do not fit the UniRef++ layout:"]
        if unmapped:
            lines.append(f"  unexpected keys ({len(unmapped)}): {listing(sorted(unmapped), 25)}")
        if untied:
            lines.append(f"  tied heads that differ from the decoder's copy ({len(untied)}): {listing(sorted(untied), 25)}")
        raise ConversionError("\n".join(lines))
    return out


# ------------------------------------------------------------------ building the model
def _text_encoder_for(state: Mapping[str, torch.Tensor], config: UniRefConfig):
    """The text encoder whose architecture the checkpoint's ``text_encoder.*`` tensors have, with the
    tokenizer and configuration of ``config.text.model_name_or_path`` (checked against the shapes)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from ..encoders.text import TextReferenceEncoder, resolve_text_model

    name = config.text.model_name_or_path
    path = resolve_text_model(name)
    try:
        hf_config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001 - not cached offline, unknown id, ...
        raise ConversionError(f"cannot load the text encoder's configuration and tokenizer from {name!r} ({exc}); "
                              "give --text-encoder a local folder or a Hub id available offline") from exc
    hidden = int(state["resizer.fc.weight"].shape[1])
    layers = len({m.group(1) for k in state for m in [re.match(r"text_encoder\.encoder\.layer\.(\d+)\.", k)] if m})
    found = (getattr(hf_config, "hidden_size", None), getattr(hf_config, "num_hidden_layers", None))
    if found != (hidden, layers):
        raise ConversionError(f"the checkpoint's text encoder has hidden size {hidden} and {layers} layers, but {name!r} "
                              f"has {found[0]} and {found[1]}; pass the matching --text-encoder "
                              "(bert-base-uncased for the released UniRef++ checkpoints)")
    return TextReferenceEncoder(config.text, backbone=AutoModel.from_config(hf_config), tokenizer=tokenizer)


def model_from_authors_state(state: Mapping[str, torch.Tensor], text_encoder: str = "bert-base-uncased",
                             where: str = "checkpoint"):
    """A :class:`~unifusion_sam.uniref.segmenter.UniRefSegmenter` holding the authors' ``state`` (strict)."""
    from .checkpoint import load_state_strict
    from .segmenter import UniRefSegmenter

    config = infer_config(state, text_encoder)
    ours = convert_authors_state_dict(state, config)
    text = _text_encoder_for(state, config) if config.text is not None else None
    model = UniRefSegmenter(config, text_encoder=text)
    for key, value in model.state_dict().items():  # architecture constants the checkpoint need not carry
        if key.endswith("relative_position_index"):
            ours[key] = value
    try:
        load_state_strict(model, ours, where)
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc
    return model.eval()


def convert_authors_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                               text_encoder: str = "bert-base-uncased", push_to_hub: str | None = None):
    """Read the authors' checkpoint, convert it strictly, and write it with ``save_pretrained`` to
    ``out_dir`` (and / or upload it to ``push_to_hub``). Returns the model."""
    state = read_authors_checkpoint(checkpoint)
    model = model_from_authors_state(state, text_encoder, where=str(checkpoint))
    if out_dir is not None:
        model.save_pretrained(out_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return model
