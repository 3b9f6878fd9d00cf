"""Knowledge distillation (Hinton, Vinyals & Dean 2015, survey [94]) and its three baselines.

The student S learns the teacher T's *soft targets* at temperature τ (survey eq. 2, KL part)::

    L_KD = τ² · KL( softmax(T(x)/τ) || softmax(S(x)/τ) )

A high τ flattens both distributions, so the student also learns how the teacher ranks the
wrong classes ("a 7 looks more like a 1 than a 0": the dark knowledge); τ² keeps the gradient
scale independent of τ. With labels, ``alpha`` mixes in the ordinary CE: α L_KD + (1-α) CE.

:func:`distill` is the one training loop every method of this package ends with. Its inputs
come from a fixed pool of images (real, noise, or synthesised once: DeepInversion, ZSKD) or
from a sampler called every step (a generator: DAFL, ZSKT). The baselines:

* :func:`supervised`: the student on the real labels, no teacher (the ceiling without KD);
* :func:`kd_real`: KD on the real training images (the ceiling of data-free KD);
* :func:`kd_noise`: KD on Gaussian noise images (the floor every data-free method must beat).

>>> r = kd_noise(teacher, student, KDConfig(steps=300), test=(d.test.x, d.test.y))
>>> r.accuracy
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.params import device_of, frozen, trainable_copy
from lfmlab.core.schedules import cosine
from lfmlab.distill.common import Callback, DistillResult, Evaluator, kd_loss
from lfmlab.progress import progress

__all__ = ["KDConfig", "distill", "supervised", "kd_real", "kd_noise", "gaussian_noise", "shift"]

Sampler = Callable[[int, torch.Generator | None], torch.Tensor]   # (batch size, rng) -> images [B, 1, 8, 8]


@dataclass
class KDConfig:
    """Student training: AdamW with a cosine schedule to 0 over ``steps`` mini-batches."""

    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0      # τ
    alpha: float = 1.0            # weight of L_KD; 1 - alpha goes to CE on labels (when there are labels)
    jitter: int = 0               # shift inputs by up to this many pixels (0: none); see distill()
    eval_every: int = 50


def shift(x: torch.Tensor, jitter: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift the whole batch x [B, C, H, W] by a random (dy, dx) in [-jitter, jitter], zero-filled."""
    if jitter <= 0:
        return x
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
    return _shifted(x, dy, dx)


def all_shifts(x: torch.Tensor, jitter: int) -> torch.Tensor:
    """x [M, C, H, W] and its copies shifted by every (dy, dx) in [-jitter, jitter]²: [(2j+1)² M, C, H, W]."""
    r = range(-jitter, jitter + 1)
    return torch.cat([_shifted(x, dy, dx) for dy in r for dx in r])


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def gaussian_noise(n: int, generator: torch.Generator | None = None, mean: float = 0.5, std: float = 0.5,
                   image_shape: tuple[int, ...] = (1, 8, 8)) -> torch.Tensor:
    """Gaussian noise images [n, 1, 8, 8], N(mean, std²) per pixel, clipped to the valid range [0, 1]."""
    return (mean + std * torch.randn((n, *image_shape), generator=generator)).clamp(0.0, 1.0)


def distill(teacher: nn.Module | None, student: nn.Module, source: torch.Tensor | Sampler,
            config: KDConfig | None = None, test: tuple[torch.Tensor, torch.Tensor] | None = None,
            labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
            callback: Callback | None = None, method: str = "KD", show: bool = True) -> DistillResult:
    """Train a copy of ``student`` to match ``teacher`` on inputs from ``source``.

    ``source``: a pool of images [M, 1, 8, 8] (mini-batches drawn from it, reshuffled each
    pass), or a sampler ``(B, generator) -> images [B, 1, 8, 8]`` called every step.
    ``labels`` [M] (pool only) enable the CE term (weight 1 - alpha); with ``teacher=None``
    the student learns from the labels alone. ``config.jitter`` = j > 0 adds every shift of
    up to j pixels of the pool to it (9x the pool for j = 1; a sampler's batches are shifted
    as a whole), each with the teacher's logits *for the shifted image*, computed once.
    ``test`` = (x [N, 1, 8, 8], y [N]) on the device: the accuracy curve. The teacher and the
    given student are unchanged on return.
    """
    cfg = config or KDConfig()
    dev = device_of(student) if teacher is None else device_of(teacher)
    s = trainable_copy(student, dev)
    opt = torch.optim.AdamW(s.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine(opt, max(cfg.steps, 1))
    pool = source if isinstance(source, torch.Tensor) else None
    if pool is not None:
        pool = pool.to(dev)
        if labels is not None:
            labels = labels.to(dev)
        n_pool = len(pool)
        if cfg.jitter > 0:
            copies = (2 * cfg.jitter + 1) ** 2
            pool = all_shifts(pool, cfg.jitter)                          # [copies M, 1, 8, 8]
            labels = None if labels is None else labels.repeat(copies)
    if teacher is None and labels is None:
        raise ValueError("distill without a teacher needs labels")
    soft = None
    if pool is not None and teacher is not None:                     # the teacher's logits, once
        with frozen(teacher), torch.no_grad():
            soft = torch.cat([teacher(pool[i:i + 1024]) for i in range(0, len(pool), 1024)])
    use_ce = labels is not None and (teacher is None or cfg.alpha < 1)
    alpha = 0.0 if teacher is None else cfg.alpha
    ev = Evaluator(test, cfg.eval_every, callback)
    losses = torch.zeros(cfg.steps, device=dev)
    order, pos = None, 0
    start = time.perf_counter()
    bar = progress(range(cfg.steps), desc=method, disable=not show)
    for step in bar:
        if pool is not None:
            if order is None or pos + cfg.batch_size > len(pool):
                order, pos = torch.randperm(len(pool), generator=generator).to(dev), 0
            rows = order[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
            x, t_logits = pool[rows], None if soft is None else soft[rows]
        else:
            x, t_logits = shift(source(cfg.batch_size, generator).to(dev), cfg.jitter, generator), None
        if teacher is not None and t_logits is None:
            with frozen(teacher), torch.no_grad():
                t_logits = teacher(x)
        out = s(x)
        loss = torch.zeros((), device=dev)
        if alpha > 0:
            loss = loss + alpha * kd_loss(out, t_logits, cfg.temperature)
        if use_ce:
            loss = loss + (1 - alpha) * F.cross_entropy(out, labels[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[step] = loss.detach()
        ev(step + 1, s, x)
    ev(cfg.steps, s, x if cfg.steps else None, last=True)
    s.eval()
    steps, acc = ev.curve()
    first = (len(pool) // 2 // n_pool) * n_pool if pool is not None else 0   # the unshifted copy
    last = first + min(100, n_pool) if pool is not None else 0                # at most 100 of its images
    return DistillResult(method, s, ev.final, steps, acc,
                         images=None if pool is None else pool[first:last].cpu(),
                         labels=None if soft is None else soft[first:last].argmax(-1).cpu(),
                         train_seconds=time.perf_counter() - start, history={"loss": losses.cpu()})


def supervised(student: nn.Module, train: tuple[torch.Tensor, torch.Tensor], config: KDConfig | None = None,
               test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
               callback: Callback | None = None) -> DistillResult:
    """Baseline: the student trained on the real training images and labels, no teacher."""
    x, y = train
    return distill(None, student, x, config, test, labels=y, generator=generator, callback=callback,
                   method="student on real labels")


def kd_real(teacher: nn.Module, student: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
            config: KDConfig | None = None, test: tuple[torch.Tensor, torch.Tensor] | None = None,
            generator: torch.Generator | None = None, callback: Callback | None = None) -> DistillResult:
    """Baseline: Hinton KD on the real training images (labels used when ``config.alpha`` < 1)."""
    x, y = train
    return distill(teacher, student, x, config, test, labels=y, generator=generator, callback=callback,
                   method="KD on real data")


def kd_noise(teacher: nn.Module, student: nn.Module, config: KDConfig | None = None,
             test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
             callback: Callback | None = None, mean: float = 0.5, std: float = 0.5) -> DistillResult:
    """The floor: Hinton KD on fresh Gaussian noise images every step (no synthesis at all)."""
    return distill(teacher, student, lambda n, g: gaussian_noise(n, g, mean, std), config, test,
                   generator=generator, callback=callback, method="KD on Gaussian noise")
