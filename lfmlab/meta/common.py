"""Pieces shared by the meta-learning methods: a batch of tasks, the losses, and 95 % confidence intervals.

A *batch of tasks* is a 4-tuple stacked along dim 0 (one row per task), the layout that
``torch.func.vmap`` maps over and that :class:`lfmlab.data.digits.Episodes` and
:class:`lfmlab.meta.sinusoid.SineTasks` unpack to::

    support_x [T, S, ...], support_y [T, S, ...], query_x [T, Q, ...], query_y [T, Q, ...]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

Tasks = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (prediction, target) -> scalar


def as_tasks(batch: Iterable[torch.Tensor]) -> Tasks:
    """Any object that unpacks to (support_x, support_y, query_x, query_y), as a plain tuple."""
    sx, sy, qx, qy = batch
    return sx, sy, qx, qy


def mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error (sinusoid regression), pred and y [N, 1]."""
    return ((pred - y) ** 2).mean()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [N, C] against labels y [N], or against soft labels y [N, C] (probabilities)."""
    return F.cross_entropy(logits, y)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of correct argmax predictions, a 0-dim tensor (no ``.item()``: safe under vmap)."""
    return (logits.argmax(-1) == y).float().mean()


@dataclass(frozen=True)
class CI:
    """A mean with its 95 % confidence half-width (Student t over ``n`` independent values)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    def __str__(self) -> str:
        digits = 3 if abs(self.mean) < 10 else 1
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"

    def percent(self) -> str:
        """As percentages, e.g. ``71.9 ± 0.5 %``."""
        return f"{100 * self.mean:.1f} ± {100 * self.half:.1f} %"


def ci95(values: torch.Tensor | Sequence[float]) -> CI:
    """Mean and 95 % confidence half-width t_{0.975, n-1} · s / √n of independent per-task values."""
    from scipy.stats import t

    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    n = int(v.numel())
    if n < 2:
        return CI(float(v.mean()) if n else math.nan, math.nan, n)
    half = float(t.ppf(0.975, n - 1)) * float(v.std(unbiased=True)) / math.sqrt(n)
    return CI(float(v.mean()), half, n)
