"""The full UniRef++ model's training losses and matching, as the authors compute them (checked by
``reference_check``): SimOTA and Hungarian matching (:mod:`.matcher`), the set criterion (:mod:`.criterion`)
and BoxInst's box-only mask terms (:mod:`.boxinst`)."""

from .criterion import LayerOutput, Target, UniRefCriterion

__all__ = ["LayerOutput", "Target", "UniRefCriterion"]
