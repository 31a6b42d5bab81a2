"""One entry point for both families: ``unifusion_sam.from_pretrained(path_or_hub_id, **kwargs)``.

It reads which kind of checkpoint a folder or Hub repo holds and builds the right model: a full
UniRef++ model (``config.json`` + ``model.safetensors``) loads on its own; a UniFusion-SAM adapter
(``adapter_config.json`` + ``adapter_model.safetensors``) needs the SAM it was trained on, ``sam=``.
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoint_io import checkpoint_family


def from_pretrained(pretrained: str | os.PathLike, *, sam=None, revision: str | None = None, **kwargs: Any):
    """Load a checkpoint of either family from a local folder or a Hugging Face Hub repo id.

    ``sam``: the SAM a UniFusion-SAM adapter was trained on (required for adapters, refused for full
    UniRef++ models). ``revision`` and the remaining keyword arguments go to the family's
    ``from_pretrained`` (``cache_dir``, ``token``, ``local_files_only``, and ``device`` for UniRef++).
    """
    hub = {k: kwargs[k] for k in ("cache_dir", "token", "local_files_only") if k in kwargs}
    family = checkpoint_family(pretrained, revision=revision, **hub)
    if family == "uniref":
        if sam is not None:
            raise ValueError(f"{pretrained} is a full UniRef++ model; it has its own backbone, so do not pass sam=")
        from .uniref.segmenter import UniRefSegmenter

        return UniRefSegmenter.from_pretrained(pretrained, revision=revision, **kwargs)
    if sam is None:
        raise TypeError(f"{pretrained} is a UniFusion-SAM adapter: pass the SAM it was trained on, "
                        "from_pretrained(path_or_id, sam=build_sam(...))")
    from .sam.model import UniFusionSam

    return UniFusionSam.from_pretrained(pretrained, sam=sam, revision=revision, **kwargs)
