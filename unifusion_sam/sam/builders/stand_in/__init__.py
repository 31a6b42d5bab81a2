"""The offline stand-in SAM: SAM's prompt encoder and mask decoder on a frozen ImageNet-pretrained
EfficientNet-Lite0 with a SAM-style neck (``build_sam("lite0")``, the default run's SAM).

- :mod:`.lite0`: its image encoder (:class:`~.lite0.Lite0ImageEncoder`; ``lite0_hr`` adds SAM 2's
  high-resolution maps, decoded by :class:`~unifusion_sam.sam.backends.high_res.HighResMaskDecoder`);
- :mod:`.pretrain`: the short pre-training that gives its neck SAM-like features and starts its decoder
  on SAM's own task (:func:`~.pretrain.pretrain_image_encoder`), configured by :class:`~.config.StandInConfig`.

The registry entry that builds it is ``CUSTOM_SAMS`` in :mod:`unifusion_sam.sam.builders.registry`; a
training run pre-trains it in :meth:`unifusion_sam.sam.training.SamTrainFamily.build_model`.
"""

from .config import StandInConfig
from .lite0 import Lite0ImageEncoder
from .pretrain import pretrain_image_encoder

__all__ = ["Lite0ImageEncoder", "StandInConfig", "pretrain_image_encoder"]
