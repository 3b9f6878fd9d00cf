"""The LoRA layer (Hu et al. 2022): a frozen linear map plus a trainable low-rank path, and its
merge. It sits on the floor beside :mod:`lfmlab.zoo.layers` (it is surgery on a zoo model's layers),
shared by every area that adapts with LoRA: tuning trains it
(:mod:`lfmlab.tuning.lora`, the method and its notebook), reuse composes trained modules
(:mod:`lfmlab.reuse.lorahub`).

A frozen weight W0 [out, in] gets a trainable low-rank update (paper eq. 3):

    h = W0 x + ΔW x = W0 x + (α / r) · B A x,     A [r, in], B [out, r], r ≪ min(in, out).

``rslora=True`` scales by α/√r instead (rank-stabilised LoRA, Kalajdzievski 2023).
A starts random (Kaiming-uniform, as peft), B at zero, so a new module starts *exactly* at the
pretrained model. Because ΔW = (α/r) B A is just a matrix, it can be **merged** into the base
weight, W = W0 + (α/r) B A (:func:`merge` / :func:`unmerge`, in place and reversible;
:func:`merge_and_unload` returns a plain model). Targets are found through
:func:`lfmlab.zoo.layers`, so GPT-2 (``Conv1D``, weights [in, out]), GPT-NeoX and Llama
(``nn.Linear``, [out, in]) all work.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from lfmlab.core.params import frozen_copy, replace_module, unfreeze
from lfmlab.zoo.layers import as_weight_layout, in_out_features, is_conv1d

__all__ = ["LoRALinear", "linear_targets", "add_lora", "lora_modules", "merge", "unmerge", "merged",
           "merge_and_unload"]


class LoRALinear(nn.Module):
    """``base`` (frozen) plus the low-rank path (α/r) B A. ``merged``: ΔW is inside base.weight."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        d_in, d_out = in_out_features(base)
        if rank > min(d_in, d_out):
            raise ValueError(f"LoRA rank {rank} is larger than this {d_out}×{d_in} layer allows: B A has rank at "
                             f"most {min(d_in, d_out)}. Choose a rank between 1 and {min(d_in, d_out)}.")
        self.base, self.rank, self.alpha = base, int(rank), float(alpha)
        # rsLoRA (Kalajdzievski 2023): α/√r keeps the update's scale stable as r grows; LoRA: α/r
        self.rslora = bool(rslora)
        self.scaling = self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, d_in, device=w.device, dtype=w.dtype))   # A [r, in]
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank, device=w.device, dtype=w.dtype))  # B [out, r]
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's (and nn.Linear's) default
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta(self) -> torch.Tensor:
        """ΔW = (α/r) B A as [out, in]."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def _add_to_base(self, sign: float) -> None:
        d = self.delta().detach() * sign  # [out, in]
        with torch.no_grad():
            self.base.weight += as_weight_layout(self.base, d.T)  # d.T is [in, out]

    def merge(self) -> None:
        if not self.merged:
            self._add_to_base(+1.0)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base(-1.0)
            self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)


def linear_targets(model: nn.Module, where: str = "attn") -> list[str]:
    """Names of the linear maps inside each layer's attention (``"attn"``), MLP (``"mlp"``) or
    both (``"all"``), found through :func:`lfmlab.zoo.layers` (GPT-2, GPT-NeoX, Llama)."""
    from lfmlab.zoo import layers

    if where not in ("attn", "mlp", "all"):
        raise ValueError(f"where must be 'attn', 'mlp' or 'all', not {where!r}")
    layout = layers(model)
    roots = []
    for i in range(layout.n_layers):
        if where in ("attn", "all"):
            roots.append(layout.attn_name(i))
        if where in ("mlp", "all"):
            roots.append(layout.mlp_name(i))
    names = []
    for root in roots:
        for sub, mod in model.get_submodule(root).named_modules():
            if sub and (isinstance(mod, nn.Linear) or is_conv1d(mod)):
                names.append(f"{root}.{sub}")
    return names



def add_lora(model: nn.Module, rank: int = 4, alpha: float | None = None, targets: str | Sequence[str] = "attn",
             dropout: float = 0.0, seed: int = 0, also_train: Sequence[str] = (), rslora: bool = False,
             kind: type[LoRALinear] = LoRALinear) -> nn.Module:
    """A frozen copy of ``model`` whose ``targets`` are wrapped in :class:`LoRALinear`.

    ``targets``: ``"attn"``, ``"mlp"``, ``"all"`` (see :func:`linear_targets`) or module names.
    ``alpha`` defaults to 2r. Only the LoRA factors (and ``also_train`` prefixes) are trainable.
    ``kind``: the wrapper class (:class:`LoRALinear`, or a subclass such as DoRA's).
    """
    names = linear_targets(model, targets) if isinstance(targets, str) else list(targets)
    if not names:
        raise ValueError("no LoRA targets found")
    new = frozen_copy(model)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(seed)
        for name in names:
            replace_module(new, name, kind(new.get_submodule(name), rank, 2.0 * rank if alpha is None else alpha,
                                           dropout, rslora))
    unfreeze(new, also_train)
    return new


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge(model: nn.Module) -> nn.Module:
    """W ← W0 + (α/r) B A in every LoRA module, in place (reversible with :func:`unmerge`)."""
    for m in lora_modules(model).values():
        m.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """W ← W − (α/r) B A: back to the frozen base weights (up to float rounding)."""
    for m in lora_modules(model).values():
        m.unmerge()
    return model


@contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """``with merged(model): ...`` runs with ΔW merged; unmerged again on exit."""
    merge(model)
    try:
        yield model
    finally:
        unmerge(model)


def merge_and_unload(model: nn.Module) -> nn.Module:
    """A new plain model (base architecture, no LoRA modules) with ΔW merged into its weights.

    Its inference cost is the base model's: this is LoRA's "zero inference overhead"."""
    new = copy.deepcopy(model)
    for name, m in lora_modules(new).items():
        m.merge()
        replace_module(new, name, m.base)
    return new.eval()
