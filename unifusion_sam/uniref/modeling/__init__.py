"""The full UniRef++ network: its configuration and presets (:mod:`.config`), backbones (ResNet, Swin, the
Lite0 stand-in; :mod:`.backbones`, :mod:`.swin`), the two-stage deformable transformer (:mod:`.transformer`,
:mod:`.deformable`), heads (:mod:`.heads`) and the assembled model (:mod:`.model`)."""

from .config import UniRefConfig, list_uniref_presets, load_uniref_preset
from .model import Detections, FrameFeatures, UniRefModel

__all__ = ["Detections", "FrameFeatures", "UniRefConfig", "UniRefModel", "list_uniref_presets", "load_uniref_preset"]
