"""LoRA: low-rank adaptation (Hu et al. 2022; survey §2.1, weight tuning).

A frozen weight W0 [out, in] gets a trainable low-rank update (paper eq. 3):

    h = W0 x + ΔW x = W0 x + (α / r) · B A x,     A [r, in], B [out, r], r ≪ min(in, out).

``rslora=True`` scales by α/√r instead (rank-stabilised LoRA, Kalajdzievski 2023): with α/r the
update's size, and so the effective learning rate, shrinks as r grows; α/√r keeps it stable.

A starts random (Kaiming-uniform, as peft), B starts at zero, so training starts *exactly* at
the pretrained model. Only A and B learn: r (in + out) parameters per adapted matrix.

Because ΔW = (α/r) B A is just a matrix, it can be **merged** into the base weight after
training, W = W0 + (α/r) B A: the model then has the base architecture and the base inference
cost (§4.1 of the paper, "no additional inference latency"), unlike adapters (survey §2.1.2).
:func:`merge` / :func:`unmerge` do this in place and reversibly; :func:`merge_and_unload`
returns a plain model with no LoRA modules left.

The layer itself ( :class:`LoRALinear`, :func:`add_lora`, :func:`merge` ...) lives in
:mod:`lfmlab.zoo.lora`, shared with reuse's LoraHub; this module trains it. Targets are found
through :func:`lfmlab.zoo.layers`, so GPT-2 (``Conv1D``, weights stored
[in, out]), GPT-NeoX and Llama (``nn.Linear``, [out, in]) all work; pass module names for others.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from lfmlab.core.params import count
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit
from lfmlab.zoo.lora import (  # noqa: F401  (the layer lives on the floor; re-exported here)
    LoRALinear,
    add_lora,
    linear_targets,
    lora_modules,
    merge,
    merge_and_unload,
    merged,
    unmerge,
)

__all__ = ["LoRALinear", "linear_targets", "add_lora", "lora_modules", "merge", "unmerge", "merged",
           "merge_and_unload", "lora"]


def lora(model: nn.Module, data, rank: int = 4, alpha: float | None = None, targets: str | Sequence[str] = "attn",
         config: TrainConfig | None = None, callback: Callback | None = None, dropout: float = 0.0,
         also_train: Sequence[str] = (), rslora: bool = False) -> TuneResult:
    """Add LoRA to a copy of ``model`` and train the factors on ``data``. ``result.model`` is
    unmerged (call :func:`merge` or :func:`merge_and_unload` to deploy)."""
    cfg = config or TrainConfig()
    new = add_lora(model, rank, alpha, targets, dropout, cfg.seed, also_train, rslora)
    losses, seconds = fit(new, data, cfg, callback, desc=f"LoRA r={rank}")
    mods = lora_modules(new)
    return TuneResult(f"LoRA (r={rank})", new, count(new, trainable_only=True), count(model), losses, seconds,
                      {"rank": rank, "alpha": 2.0 * rank if alpha is None else alpha, "rslora": rslora,
                       "targets": list(mods)})
