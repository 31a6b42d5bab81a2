"""What the shared training run (:func:`unifusion_sam.training.run.run`) needs from UniFusion-SAM: the recipe
config (:class:`~.config.SamTrainConfig`), samples and batches (:mod:`.samples`) and the family
(:class:`~.family.SamTrainFamily`: model, parameter groups, embedding cache, loss, saving).

Imported on its own (``import unifusion_sam.sam`` does not import it), so using a model never loads the
training engine.
"""

from .config import SamTrainConfig
from .family import SamEmbeddingCache, SamTrainFamily, pretrain_stand_in, sam_loss, sam_parameter_groups
from .samples import SamSample, SamSamplePrep, SamTrainBatch, collate_sam, prepare_sam_sample

__all__ = [
    "SamEmbeddingCache",
    "SamSample",
    "SamSamplePrep",
    "SamTrainBatch",
    "SamTrainConfig",
    "SamTrainFamily",
    "collate_sam",
    "prepare_sam_sample",
    "pretrain_stand_in",
    "sam_loss",
    "sam_parameter_groups",
]
