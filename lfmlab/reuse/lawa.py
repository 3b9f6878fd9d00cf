"""Checkpoint averaging along a training run: LAWA, LAtest Weight Averaging (Kaddour, "Stop wasting
my time! Saving days of ImageNet and BERT training with latest weight averaging", 2022; Sanyal et
al. 2023; survey §4.2.1).

Keep the weights at the end of every epoch; the LAWA model at epoch e is the uniform average of
the last k checkpoints, θ̄_e = (1/k) Σ_{j=e-k+1..e} θ_j. Consecutive checkpoints of one run lie in
one basin, so their average is a valid model, and it smooths out the noise of a large learning
rate: it reaches a given accuracy in fewer epochs than the last checkpoint alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab.core.state import Merged, StateDict, state_of
from lfmlab.reuse.interpolate import uniform_average

__all__ = ["Trajectory", "train_trajectory", "lawa"]


@dataclass
class Trajectory:
    """The checkpoints of a run (one state dict per epoch), their mean training loss and the seconds."""

    checkpoints: list[StateDict]
    losses: torch.Tensor
    seconds: float


def train_trajectory(model: nn.Module, split, epochs: int = 20, lr: float = 2e-2, batch_size: int = 32,
                     momentum: float = 0.9, seed: int = 0) -> Trajectory:
    """Train ``model`` in place with SGD + momentum at a *constant* learning rate (LAWA's setting: no
    decay does the averaging's job) and keep a checkpoint after every epoch."""
    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    gen = torch.Generator(device=split.x.device).manual_seed(int(seed))
    batches = split.loader(batch_size, shuffle=True, generator=gen)
    checkpoints, losses = [], torch.zeros(epochs, device=split.x.device)
    model.train()
    for e in range(epochs):
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[e] += loss.detach() * len(y) / len(split)
        checkpoints.append(state_of(model))
    model.eval()
    return Trajectory(checkpoints, losses.cpu(), time.perf_counter() - start)


def lawa(checkpoints: Sequence[StateDict], k: int = 5, at: int | None = None) -> Merged:
    """θ̄ = the average of the ``k`` checkpoints ending at index ``at`` (default: the last one)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    end = len(checkpoints) if at is None else int(at) + 1
    window = list(checkpoints[max(0, end - k):end])
    if not window:
        raise ValueError(f"no checkpoints before index {at}")
    merged = uniform_average(window)
    merged.method, merged.hyper = "LAWA", {"k": len(window), "at": end - 1}
    return merged
