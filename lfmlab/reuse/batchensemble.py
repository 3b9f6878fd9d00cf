"""BatchEnsemble (Wen, Tran & Ba, ICLR 2020; survey §4.1, "efficient ensembles").

An ensemble of n networks stores n weight matrices. BatchEnsemble shares one matrix W per layer
and gives member i only two vectors, r_i [d_in] and s_i [d_out]: its weight is the Hadamard
product W_i = W ∘ (s_i r_iᵀ), a rank-one modulation of the shared W. It never builds W_i: for
inputs X [B, d_in] of member i,

    X W_iᵀ = ((X ∘ r_i) Wᵀ) ∘ s_i,

so all members run as one matrix product over a batch tiled n times. Extra parameters per
layer: n (d_in + d_out) (+ a bias per member), instead of (n − 1) d_in d_out. As in the paper,
r and s start at random signs (±1) so the members differ from the first step.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab.core.schedules import cosine

__all__ = ["BatchEnsembleLinear", "BatchEnsembleMLP", "train_batchensemble", "Trained"]


class BatchEnsembleLinear(nn.Module):
    """n members sharing ``weight`` [d_out, d_in]; fast weights r [n, d_in], s [n, d_out]; bias [n, d_out].

    forward: x [n, B, d_in] -> [n, B, d_out]."""

    def __init__(self, d_in: int, d_out: int, members: int, generator: torch.Generator | None = None):
        super().__init__()
        self.members = int(members)
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-bound, bound, generator=generator))
        sign = lambda *shape: torch.randint(0, 2, shape, generator=generator).float() * 2 - 1  # noqa: E731
        self.r = nn.Parameter(sign(members, d_in))                                     # [n, d_in]
        self.s = nn.Parameter(sign(members, d_out))                                    # [n, d_out]
        self.bias = nn.Parameter(torch.empty(members, d_out).uniform_(-bound, bound, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.r[:, None]) @ self.weight.T * self.s[:, None] + self.bias[:, None]

    def member_weight(self, i: int) -> torch.Tensor:
        """W_i = W ∘ (s_i r_iᵀ), [d_out, d_in] (for checking; forward never builds it)."""
        return self.weight * torch.outer(self.s[i], self.r[i])


class BatchEnsembleMLP(nn.Module):
    """An MLP (sizes like ``DigitsMLP``) whose every linear layer is a :class:`BatchEnsembleLinear`.

    ``member_logits(x)``: x [B, ...] -> [n, B, C] (the input is tiled n times);
    ``forward(x)``: the members' mean logits [B, C] (eq. 8 with λ_i = 1/n).
    """

    def __init__(self, hidden: Sequence[int] = (64, 64), n_classes: int = 10, members: int = 4,
                 in_features: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        sizes = [in_features, *hidden, n_classes]
        self.layers = nn.ModuleList(BatchEnsembleLinear(a, b, members, gen) for a, b in zip(sizes[:-1], sizes[1:]))
        self.members = int(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1).unsqueeze(0).expand(self.members, -1, -1)              # [n, B, d_in]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h                                                                # [n, B, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.member_logits(x).mean(0)


@dataclass
class Trained:
    """A trained BatchEnsemble, its training seconds and per-epoch mean loss."""

    model: BatchEnsembleMLP
    seconds: float
    losses: torch.Tensor


def train_batchensemble(split, members: int = 4, hidden: Sequence[int] = (64, 64), n_classes: int = 10,
                        epochs: int = 20, lr: float = 5e-3, batch_size: int = 32, weight_decay: float = 1e-4,
                        seed: int = 0) -> Trained:
    """Train a BatchEnsemble on ``split``: every member sees the same mini-batch (tiled), the loss is
    the sum of the members' cross-entropies; AdamW with a cosine schedule (weight decay on W only)."""
    start = time.perf_counter()
    dev = split.x.device
    model = BatchEnsembleMLP(hidden, n_classes, members, split.x[0].numel(), seed).to(dev)
    shared = [l.weight for l in model.layers]
    fast = [p for l in model.layers for p in (l.r, l.s, l.bias)]
    opt = torch.optim.AdamW(
        [{"params": shared, "weight_decay": weight_decay}, {"params": fast, "weight_decay": 0.0}], lr=lr
    )
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    batches = split.loader(batch_size, shuffle=True, generator=gen)
    total = max(epochs * len(batches), 1)
    sched = cosine(opt, total)
    losses = torch.zeros(epochs, device=dev)
    model.train()
    for e in range(epochs):
        for x, y in batches:
            logits = model.member_logits(x)                                       # [n, B, C]
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat(members)) * members
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[e] += loss.detach() * len(y) / len(split) / members
    return Trained(model.eval(), time.perf_counter() - start, losses.cpu())
