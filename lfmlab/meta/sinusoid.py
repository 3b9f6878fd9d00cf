"""Sinusoid regression tasks (Finn et al. 2017, §5.1), the "hello world" of meta learning.

A task is y = A sin(x - φ) with amplitude A ~ U[0.1, 5] and phase φ ~ U[0, π]; inputs
x ~ U[-5, 5]. A learner sees K points of a new task (the support set, K = 10) and must
predict the whole curve (the query set). The model is Finn's MLP 1-40-40-1 (ReLU).

The *pretrained baseline* (Finn et al.'s "pretrained, standard" row) trains one network by
plain regression on points of many random tasks, then fine-tunes it on the K points. It learns
roughly the average curve: over phases in [0, π], E[A sin(x - φ)] = -(2/π) E[A] cos x ≈ -1.6 cos x.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab import runtime
from lfmlab.core.params import device_of
from lfmlab.meta.common import mse
from lfmlab.progress import progress

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SineTasks:
    """T sinusoid tasks: support_x/support_y [T, K, 1], query_x/query_y [T, Q, 1], amplitude/phase [T].

    Unpacks as ``support_x, support_y, query_x, query_y = tasks`` (the layout of :mod:`lfmlab.meta.common`).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor

    def __iter__(self):
        return iter((self.support_x, self.support_y, self.query_x, self.query_y))

    def __len__(self) -> int:
        return int(self.amplitude.shape[0])

    def __getitem__(self, item) -> "SineTasks":
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        return SineTasks(*(t[item] for t in (self.support_x, self.support_y, self.query_x, self.query_y,
                                             self.amplitude, self.phase)))

    def shots(self, k: int) -> "SineTasks":
        """The same tasks with only their first k support points (the query sets unchanged)."""
        if not 0 <= int(k) <= self.support_x.shape[1]:
            raise ValueError(f"k = {k}: these tasks have {self.support_x.shape[1]} support points")
        k = int(k)
        return SineTasks(self.support_x[:, :k], self.support_y[:, :k], self.query_x, self.query_y,
                         self.amplitude, self.phase)

    def curve(self, x: torch.Tensor) -> torch.Tensor:
        """The true curves at x [N] or [N, 1]: [T, N, 1]."""
        return truth(self.amplitude, self.phase, x.reshape(1, -1, 1))


def truth(amplitude: torch.Tensor, phase: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y = A sin(x - φ), broadcasting amplitude/phase [T] against x [T, N, 1]."""
    return amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))


def sample(n_tasks: int, k_shot: int = 10, n_query: int = 10, generator: torch.Generator | None = None,
           device: str | torch.device | None = None) -> SineTasks:
    """Draw ``n_tasks`` tasks with ``k_shot`` support and ``n_query`` query points each (one batched draw)."""
    if n_tasks < 1 or k_shot < 1 or n_query < 1:
        raise ValueError("need n_tasks, k_shot and n_query >= 1")
    dev = runtime.device(device)
    gen_dev = generator.device if generator is not None else torch.device("cpu")

    def uniform(lo_hi: tuple[float, float], *shape: int) -> torch.Tensor:
        u = torch.rand(*shape, generator=generator, device=gen_dev).to(dev)
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

    amplitude, phase = uniform(AMPLITUDE, n_tasks), uniform(PHASE, n_tasks)
    x = uniform(X_RANGE, n_tasks, k_shot + n_query, 1)
    y = truth(amplitude, phase, x)
    return SineTasks(x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:], amplitude, phase)


def sampler(k_shot: int = 10, n_query: int = 10, device: str | torch.device | None = None):
    """A task sampler for :func:`lfmlab.meta.maml.meta_train`: (n_tasks, generator) -> SineTasks."""
    return lambda n, generator=None: sample(n, k_shot, n_query, generator, device)


class SineMLP(nn.Module):
    """Finn et al.'s regressor: ``features`` = (Linear-ReLU) x 2 with 40 units, ``head`` = Linear(40, 1).

    x [N, 1] -> y [N, 1].
    """

    def __init__(self, hidden: Sequence[int] = (40, 40)):
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def model(hidden: Sequence[int] = (40, 40), seed: int | None = None,
          device: str | torch.device | None = None) -> SineMLP:
    """A fresh SineMLP on ``device``; with ``seed``, its initialisation leaves the global RNG alone."""
    if seed is None:
        return SineMLP(hidden).to(runtime.device(device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return SineMLP(hidden).to(runtime.device(device))


@dataclass
class Pretrained:
    """The joint-training baseline: ``model`` and its training loss per step ``losses`` [steps]."""

    model: nn.Module
    losses: torch.Tensor
    seconds: float


def pretrain(net: nn.Module, steps: int = 2000, tasks_per_step: int = 25, points: int = 20,
             lr: float = 1e-3, generator: torch.Generator | None = None) -> Pretrained:
    """Finn et al.'s baseline: regress one network on points of many random tasks (no adaptation
    in training). Same data budget per step as MAML's meta-batch. ``net`` is copied, not changed."""
    net = copy.deepcopy(net).train()
    dev = device_of(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = torch.zeros(steps, device=dev)
    start = time.perf_counter()
    for step in progress(range(steps), desc="pretrain"):
        t = sample(tasks_per_step, points // 2, points - points // 2, generator, dev)
        x = torch.cat([t.support_x, t.query_x], 1).reshape(-1, 1)
        y = torch.cat([t.support_y, t.query_y], 1).reshape(-1, 1)
        loss = mse(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach()
    return Pretrained(net.eval(), losses.cpu(), time.perf_counter() - start)
