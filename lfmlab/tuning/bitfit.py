"""BitFit (Ben Zaken, Goldberg & Ravfogel 2022; survey §2.1.1): tune only the bias terms.

Every linear map W x + b and every normalisation layer keeps its weights frozen; only the
vectors b learn (about 0.1% of BERT's parameters, ~0.7% of world-lm's). Models without biases
(Llama) have nothing to tune and are refused with a clear message.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from lfmlab.core.params import count, frozen_copy, unfreeze
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["bias_names", "bitfit"]


def bias_names(model: nn.Module) -> list[str]:
    """Names of the bias parameters (the parameters BitFit trains)."""
    return [n for n, _ in model.named_parameters() if n.split(".")[-1] == "bias"]


def bitfit(model: nn.Module, data, config: TrainConfig | None = None, callback: Callback | None = None,
           also_train: Sequence[str] = ()) -> TuneResult:
    """Train only the biases of a copy of ``model`` (plus ``also_train`` prefixes, e.g. a new head)."""
    new = frozen_copy(model)
    names = bias_names(new)
    if not names:
        raise ValueError(f"{type(model).__name__} has no bias parameters, so BitFit has nothing to tune "
                         f"(Llama-style models use none): choose LoRA or adapters instead.")
    params = dict(new.named_parameters())
    for name in names:
        params[name].requires_grad_(True)
    extra = unfreeze(new, also_train)
    losses, seconds = fit(new, data, config, callback, desc="BitFit")
    return TuneResult("BitFit", new, count(new, trainable_only=True), count(model), losses, seconds,
                      {"biases": len(names), "also_trained": extra})
