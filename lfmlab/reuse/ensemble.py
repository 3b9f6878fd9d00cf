"""Ensembles of logits (survey §4.1, eq. 8): M*(x) = Σ_i λ_i M_i(x).

Every member runs on every input, so an ensemble of n models costs n times the inference of one.
When the members share an architecture, their weights are stacked and all members run in one
vectorised call (``torch.func.stack_module_state`` + ``vmap``); otherwise they run in a loop.
:func:`train_members` trains a *deep ensemble* (n models from different seeds and data orders)
the same way: one vmapped forward and backward for all members per step.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from lfmlab.core.params import device_of
from lfmlab.core.schedules import cosine

__all__ = ["LogitEnsemble", "ensemble", "train_members", "Members"]


def _same_architecture(models: Sequence[nn.Module]) -> bool:
    first = {k: v.shape for k, v in models[0].state_dict().items()}
    return all(type(m) is type(models[0]) and {k: v.shape for k, v in m.state_dict().items()} == first
               for m in models[1:])


class LogitEnsemble(nn.Module):
    """Eq. 8: the weighted sum of the members' logits. ``weights`` default to 1/n each.

    ``forward(x)`` -> [B, C]; ``member_logits(x)`` -> [n, B, C]. The members are kept (not copied).
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)
        w = (
            torch.full((len(models),), 1.0 / len(models))
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float32)
        )
        if w.shape != (len(models),):
            raise ValueError(f"need one weight per model ({len(models)}), got {list(w.shape)}")
        self.register_buffer("weights", w.to(device_of(models[0])))
        self.vectorised = _same_architecture(models)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's logits, [n, B, C]; one vmapped call when the members share an architecture."""
        if not self.vectorised:
            return torch.stack([m(x) for m in self.members])
        from torch.func import functional_call, stack_module_state, vmap

        params, buffers = stack_module_state(list(self.members))             # key -> [n, *shape]
        template = self.members[0]
        return vmap(lambda p, b: functional_call(template, (p, b), (x,)))(params, buffers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(self.weights, self.member_logits(x), dims=1)   # Σ_i λ_i M_i(x)


def ensemble(models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> LogitEnsemble:
    """The logit ensemble of ``models`` (eq. 8), in eval mode."""
    return LogitEnsemble(models, weights).eval()


@dataclass
class Members:
    """Independently trained members, their training seconds and per-epoch mean losses [epochs, n]."""

    models: list[nn.Module]
    seconds: float
    losses: torch.Tensor


def train_members(build: Callable[[int], nn.Module], n: int, split, epochs: int = 20, lr: float = 5e-3,
                  batch_size: int = 32, weight_decay: float = 1e-4, seed: int = 0) -> Members:
    """Train n models ``build(seed_i)`` at once, each with its own initialisation and data order.

    All members take one vmapped step together: AdamW on the stacked weights is the same as n
    separate AdamW optimisers, since it acts on every entry independently. Cosine schedule to 0.
    ``split``: an ``lfmlab.data.digits.Split`` (x, y on one device).
    """
    from torch.func import functional_call, stack_module_state, vmap

    start = time.perf_counter()
    dev = split.x.device
    models = [build(1000 * int(seed) + i).to(dev) for i in range(n)]
    params, buffers = stack_module_state(models)                              # key -> [n, *shape], leaves
    template = copy.deepcopy(models[0])
    opt = torch.optim.AdamW(params.values(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(split) // batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = cosine(opt, total)
    gen = torch.Generator().manual_seed(int(seed))

    def loss_fn(p, b, x, y):
        return nn.functional.cross_entropy(functional_call(template, (p, b), (x,)), y)

    losses = torch.zeros(epochs, n)
    template.train()
    for e in range(epochs):
        order = torch.argsort(torch.rand(n, len(split), generator=gen), dim=1).to(dev)    # [n, N]
        for s in range(steps_per_epoch):
            rows = order[:, s * batch_size:(s + 1) * batch_size]                         # [n, B]
            loss = vmap(loss_fn)(params, buffers, split.x[rows], split.y[rows])          # [n]
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sched.step()
            losses[e] += loss.detach().cpu() * rows.shape[1] / len(split)
    for i, m in enumerate(models):
        m.load_state_dict({**{k: v[i].detach().clone() for k, v in params.items()},
                           **{k: v[i].clone() for k, v in buffers.items()}})
        m.eval()
    return Members(models, time.perf_counter() - start, losses)
