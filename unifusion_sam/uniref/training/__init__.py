"""What the shared training run (:func:`unifusion_sam.training.run.run`) needs from the full UniRef++ model: the
recipe config (:class:`~.config.UniRefTrainConfig`), samples and batches (:mod:`.samples`) and the family
(:class:`~.family.UniRefTrainFamily`). Imported on its own: ``import unifusion_sam.uniref`` does not load it."""

from .config import UNIREF_STAGES, UniRefTrainConfig
from .family import UniRefTrainFamily, build_model, uniref_parameter_groups
from .samples import UniRefSample, UniRefSamplePrep, collate_uniref, pad_images

__all__ = [
    "UNIREF_STAGES",
    "UniRefSample",
    "UniRefSamplePrep",
    "UniRefTrainConfig",
    "UniRefTrainFamily",
    "build_model",
    "collate_uniref",
    "pad_images",
    "uniref_parameter_groups",
]
