"""Train the full UniRef++ model: ``accelerate launch recipes/train_uniref.py [--config ...]``.

The paper trains in three stages (Table 10), each starting from the previous one's weights:

    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_det.yaml
    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_image.yaml \\
        --init outputs/uniref_r50_det/model
    accelerate launch recipes/train_uniref.py --config recipes/configs/uniref_r50_video.yaml \\
        --init outputs/uniref_r50_image/model

(``--init`` also takes a converted authors' checkpoint: ``unifusion-sam convert-uniref``.) With no
arguments it trains the small preset (the frozen ImageNet-pretrained EfficientNet-Lite0 backbone, 2 + 2
layers, 20 queries, the offline MiniLM text encoder; everything else from random weights) on the library's
synthetic data through the image and video stages (``recipes/configs/uniref_default.yaml``), evaluates on the
same held-out synthetic split as the UniFusion-SAM default run, and writes ``metrics.json``, overlay PNGs, a
GIF of a tracked video and the model (``model/``) under ``outputs/uniref_default``.

Every config field can be set from the command line with its dotted name, e.g.
``--image.lr 2e-4 --batch_size 4 --stage video --resume latest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from unifusion_sam.training import parse_config, run
from unifusion_sam.uniref.training import UniRefTrainConfig, UniRefTrainFamily

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "uniref_default.yaml"


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(UniRefTrainConfig, DEFAULT_CONFIG, argv, __doc__)
    return run(cfg, UniRefTrainFamily(cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
