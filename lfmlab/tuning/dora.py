"""DoRA: weight-decomposed low-rank adaptation (Liu et al. 2024, ICML; survey §2.1, weight tuning).

DoRA splits a pretrained weight into a magnitude and a direction, W₀ = m · V / ‖V‖_c (‖·‖_c: the
norm of each output unit's weight vector), lets LoRA update the direction and trains the magnitude
directly (paper eq. 5):

    W' = m ⊙ (W₀ + (α/r) B A) / ‖W₀ + (α/r) B A‖_c,       m ∈ R^{out}, initialised to ‖W₀‖_c,

so at the start (B = 0) W' = W₀ exactly. The paper's analysis (its Fig. 2) is that full fine-tuning
changes magnitude and direction in opposite senses while LoRA can only change them together; the
separate m lets DoRA move like fine-tuning. As the paper suggests (§4.3), ‖W₀ + ΔW‖_c is treated as
a constant in the backward pass (detached): the gradient reaches m and, through the direction, A
and B, at LoRA's memory cost. After training the scaled weight is merged, W = W', so the deployed
model has the base architecture and cost.

It is :class:`lfmlab.tuning.lora.LoRALinear` plus the magnitude vector; targets, initialisation
and ``rslora`` scaling are LoRA's. The tests check it against peft's ``use_dora=True`` on GPT-2,
GPT-NeoX and Llama layouts.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lfmlab.core.params import count
from lfmlab.tuning.lora import LoRALinear, add_lora, merge_and_unload
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit
from lfmlab.zoo.layers import as_weight_layout, weight_in_out

# merge_and_unload is LoRA's: it calls each module's merge, which DoRALinear folds m into
__all__ = ["DoRALinear", "add_dora", "dora_modules", "merge_and_unload", "dora"]


class DoRALinear(LoRALinear):
    """A frozen linear map W₀ with LoRA factors and a trainable magnitude m [out]."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__(base, rank, alpha, dropout, rslora)
        self.magnitude = nn.Parameter(self._w0().norm(dim=1).detach().clone())        # ‖W₀‖_c [out]
        self._saved: torch.Tensor | None = None

    def _w0(self) -> torch.Tensor:
        return weight_in_out(self.base).T                                             # [out, in]

    def weight_norm(self) -> torch.Tensor:
        """‖W₀ + ΔW‖_c [out], detached (a constant in the backward pass, paper §4.3)."""
        return (self._w0() + self.delta()).norm(dim=1).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        if self.merged:
            return self.base(x)
        y = self.base(x)
        bias = self.base.bias if getattr(self.base, "bias", None) is not None else 0.0
        s = self.magnitude / self.weight_norm()                                       # m / ‖W₀ + ΔW‖_c
        lora = self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)
        return bias + s * (y - bias + lora)

    @torch.no_grad()
    def merge(self) -> None:
        """W ← m ⊙ (W₀ + ΔW) / ‖W₀ + ΔW‖_c in place (:meth:`unmerge` restores W₀ exactly)."""
        if self.merged:
            return
        self._saved = self.base.weight.detach().clone()
        w = self._w0() + self.delta()
        w = (self.magnitude / w.norm(dim=1))[:, None] * w                            # [out, in]
        self.base.weight.copy_(as_weight_layout(self.base, w.T))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.copy_(self._saved)
            self._saved, self.merged = None, False


def add_dora(model: nn.Module, rank: int = 4, alpha: float | None = None, targets: str | Sequence[str] = "attn",
             dropout: float = 0.0, seed: int = 0, also_train: Sequence[str] = (), rslora: bool = False) -> nn.Module:
    """A frozen copy of ``model`` whose ``targets`` are wrapped in :class:`DoRALinear` (LoRA's
    targets and defaults: ``alpha`` = 2r). Only A, B, m (and ``also_train``) are trainable."""
    return add_lora(model, rank, alpha, targets, dropout, seed, also_train, rslora, kind=DoRALinear)


def dora_modules(model: nn.Module) -> dict[str, DoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, DoRALinear)}


def dora(model: nn.Module, data, rank: int = 4, alpha: float | None = None, targets: str | Sequence[str] = "attn",
         config: TrainConfig | None = None, callback: Callback | None = None, dropout: float = 0.0,
         also_train: Sequence[str] = (), rslora: bool = False) -> TuneResult:
    """Add DoRA to a copy of ``model`` and train A, B and m on ``data``; ``result.model`` is
    unmerged (:func:`merge_and_unload` deploys it at the base model's cost)."""
    cfg = config or TrainConfig()
    new = add_dora(model, rank, alpha, targets, dropout, cfg.seed, also_train, rslora)
    losses, seconds = fit(new, data, cfg, callback, desc=f"DoRA r={rank}")
    return TuneResult(f"DoRA (r={rank})", new, count(new, trainable_only=True), count(model), losses, seconds,
                      {"rank": rank, "alpha": 2.0 * rank if alpha is None else alpha, "rslora": rslora,
                       "targets": list(dora_modules(new))})
