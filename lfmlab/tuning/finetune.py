"""Full fine-tuning (survey §2.1.1): every weight of the pretrained model learns the new task.

The reference point of every parameter-efficient method: 100% of the parameters are trainable,
and a full copy of the model is stored per task. Applied to a randomly initialised model of the
same architecture (:func:`lfmlab.tuning.tasks.random_like`) it is the *learn-from-data* control:
same data, same steps, no pretrained knowledge.
"""
from __future__ import annotations

import copy

from torch import nn

from lfmlab.core.params import count
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["finetune"]


def finetune(model: nn.Module, data, config: TrainConfig | None = None, callback: Callback | None = None,
             method: str = "full fine-tuning") -> TuneResult:
    """Fine-tune a deep copy of ``model`` (all parameters) on ``data``; ``model`` is unchanged."""
    new = copy.deepcopy(model)
    for p in new.parameters():
        p.requires_grad_(True)
    losses, seconds = fit(new, data, config, callback, desc=method)
    n = count(model)
    return TuneResult(method, new, count(new, trainable_only=True), n, losses, seconds)
