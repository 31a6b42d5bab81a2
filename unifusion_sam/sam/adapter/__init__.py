"""The UniFusion-SAM adapter network: reference encoders and UniFusion on a frozen SAM's image embedding,
SAM's mask decoder, LoRA through ``peft``, its config and presets, and its checkpoints.

- :mod:`.config`: :class:`~.config.UniFusionSamConfig` and the presets in ``adapters/``;
- :mod:`.model`: the stateless network :class:`~.model.UniFusionSam` (named stages + training ``forward``);
- :mod:`.wrap`: :func:`~.wrap.wrap_sam`, a SAM -> an adapter model;
- :mod:`.batch`: its batched inputs and outputs; :mod:`.grounding`: the text point; :mod:`.lora`: LoRA;
- :mod:`.checkpoint` / :mod:`.model_card`: ``save_pretrained`` / ``from_pretrained`` specifics.
"""

from .batch import SamBatch, SamOutput
from .config import LoraSettings, UniFusionSamConfig, list_presets, load_preset, merge_overrides
from .model import UniFusionSam
from .wrap import default_preset_for, wrap_sam

__all__ = [
    "LoraSettings",
    "SamBatch",
    "SamOutput",
    "UniFusionSam",
    "UniFusionSamConfig",
    "default_preset_for",
    "list_presets",
    "load_preset",
    "merge_overrides",
    "wrap_sam",
]
