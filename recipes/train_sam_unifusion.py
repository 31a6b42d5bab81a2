"""Train a UniFusion-SAM adapter: ``accelerate launch recipes/train_sam_unifusion.py [--config ...]``.

With no arguments it builds the offline stand-in SAM (``build_sam("lite0")``: SAM's prompt encoder and
mask decoder on a frozen ImageNet-pretrained EfficientNet-Lite0 with a SAM-style neck), gives its neck
SAM-like features in a short pre-training on synthetic scenes (``stand_in``), then trains the adapter
with the offline MiniLM text encoder on the library's synthetic data through both stages (image, then
video), evaluates on a fixed held-out synthetic split, and writes ``metrics.json``, ``run_config.json``,
overlay PNGs, a GIF of a tracked video, the adapter and (because that SAM exists nowhere else) the SAM
itself (``sam_lite0.safetensors``) under ``outputs/default``. ``--sam tiny`` is a random tiny ViT SAM;
a real one plugs in with ``--sam vit_b --sam_checkpoint sam_vit_b_01ec64.pth --adapter sam-vit-b``.

Every config field can be set from the command line with its dotted name, e.g.
``--image.lr 2e-4 --batch_size 4 --stage video --resume latest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from unifusion_sam.sam.training import SamTrainConfig, SamTrainFamily
from unifusion_sam.training import parse_config, run

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(SamTrainConfig, DEFAULT_CONFIG, argv, __doc__)
    return run(cfg, SamTrainFamily(cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
