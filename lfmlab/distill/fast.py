"""A fast synthesiser in the spirit of Fast-DFKD (Fang et al., "Up to 100x Faster Data-free
Knowledge Distillation", AAAI 2022; survey §3.3, [123]).

DeepInversion is slow because every batch starts from noise and needs hundreds of steps,
although all batches of one dataset share most of their structure (strokes, the blank
border, the stroke width). Fast-DFKD learns that common part once, as the *initialisation*
θ of a generator G_θ(z), and meta-learns it so that a few steps from θ give a new batch:

    for each round r = 1 .. R:
        θ' ← θ;  z ~ N(0, I) [B, z_dim], learnable;  y = 0, 1, ..., 9, 0, 1, ...
        k steps of Adam on (θ', z):  L(G_θ'(z)) = CE(T(x), y) + α_bn R_BN + α_tv R_TV + α_l2 ||x||²
        bank ← bank ∪ G_θ'(z)                           (the round's images, kept for KD)
        θ ← θ + ε (θ' - θ)                              (Reptile: move θ towards the adapted weights)

The loss is DeepInversion's (eq. 1, 3, 4; :func:`lfmlab.distill.common.synthesis_loss`), so
the images can be compared one for one; the student is then distilled on the bank exactly as
on DeepInversion's pool (:func:`lfmlab.distill.kd.distill`). With k = 10 against DeepInversion's
200 steps from noise, each image costs ~20x fewer teacher passes, at the price of a small
generator's passes and the rounds the meta-initialisation needs to become good.

Fast-DFKD also adds an adversarial term against the student while synthesising; here the
synthesis is independent of the student (``weights.adversarial`` = 0), which keeps the speed
comparison with DeepInversion clean. Two more differences from the reference: θ is
meta-learned with the Reptile update above (one of the paper's two variants), and every round
is synthesised before the student's KD starts, where the reference interleaves synthesis rounds
with student training.

>>> r = fast_dfkd(teacher, student, FastConfig(rounds=10), test=(d.test.x, d.test.y))
>>> r.synth_seconds, r.accuracy        # compare with deepinversion(...).synth_seconds
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lfmlab.core.params import device_of, frozen, trainable_copy
from lfmlab.distill.common import (
    Callback,
    DistillResult,
    Generator,
    WeightedConfig,
    Weights,
    synthesis_loss,
)
from lfmlab.distill.kd import KDConfig, distill
from lfmlab.progress import progress

__all__ = ["FastConfig", "fast_dfkd", "meta_synthesise", "WEIGHTS"]

WEIGHTS = Weights(ce=1.0, bn=0.1, tv=0.05, l2=0.001)
TERMS = ("ce", "bn", "tv", "l2")


@dataclass
class FastConfig(WeightedConfig):
    """R ``rounds`` of ``per_round`` images, ``inner_steps`` steps each from the meta-init."""

    rounds: int = 10
    per_round: int = 50
    n_classes: int = 10
    inner_steps: int = 10
    lr: float = 0.01              # Adam on θ' (z uses 10x this)
    reptile: float = 0.5          # ε of the meta-update
    z_dim: int = 32
    width: int = 16
    weights: Weights = field(default_factory=lambda: copy.copy(WEIGHTS))
    kd: KDConfig = field(default_factory=lambda: KDConfig(steps=1000, jitter=1))



@torch.no_grad()
def _reptile(meta: nn.Module, adapted: nn.Module, eps: float) -> None:
    """θ ← θ + ε (θ' - θ) for parameters; BatchNorm running statistics are copied over."""
    for p, q in zip(meta.parameters(), adapted.parameters()):
        p.add_(q - p, alpha=eps)
    for b, c in zip(meta.buffers(), adapted.buffers()):
        if b.dtype.is_floating_point:
            b.lerp_(c, eps)


def meta_synthesise(teacher: nn.Module, config: FastConfig | None = None, generator: torch.Generator | None = None,
                    callback: Callback | None = None, show: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, float, Generator, dict[str, torch.Tensor]]:
    """The meta synthesiser of the module docstring. Returns (images [R B, 1, 8, 8], targets
    [R B], seconds, the meta-learned generator, loss of the last inner step per round)."""
    cfg = config or FastConfig()
    dev = device_of(teacher)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        meta = Generator(cfg.z_dim, cfg.width).to(dev)
    y = torch.arange(cfg.n_classes, device=dev).repeat(-(-cfg.per_round // cfg.n_classes))[:cfg.per_round]
    bank, first_loss, last_loss = [], [], []
    start = time.perf_counter()
    with frozen(teacher):
        for r in progress(range(cfg.rounds), desc="Fast-DFKD synthesis", disable=not show):
            g = trainable_copy(meta, dev)                                           # θ' ← θ
            z = torch.randn(cfg.per_round, cfg.z_dim, generator=generator).to(dev).requires_grad_(True)
            opt = torch.optim.Adam([{"params": g.parameters()}, {"params": [z], "lr": 10 * cfg.lr}],
                                   lr=cfg.lr, betas=(0.5, 0.999))
            for k in range(cfg.inner_steps):
                loss, _, _ = synthesis_loss(teacher, g(z), cfg.weights, targets=y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if k == 0:
                    first_loss.append(loss.detach())
            last_loss.append(loss.detach())
            with torch.no_grad():
                x = g(z)                                                        # train-mode BN, as optimised
            bank.append(x)
            _reptile(meta, g, cfg.reptile)                                      # θ ← θ + ε (θ' - θ)
            if callback is not None:
                callback("synthesis", r + 1, x[:100].cpu(), None)
    seconds = time.perf_counter() - start
    history = {"first inner loss": torch.stack(first_loss).cpu(), "last inner loss": torch.stack(last_loss).cpu()}
    return torch.cat(bank), y.repeat(cfg.rounds), seconds, meta.eval(), history


def fast_dfkd(teacher: nn.Module, student: nn.Module, config: FastConfig | None = None,
              test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
              callback: Callback | None = None) -> DistillResult:
    """Meta-synthesise a bank of images, then KD on it. Teacher and student are unchanged on return."""
    cfg = config or FastConfig()
    images, targets, seconds, meta, history = meta_synthesise(teacher, cfg, generator, callback)
    result = distill(teacher, student, images, cfg.kd, test, generator=generator, callback=callback,
                     method="Fast (meta-learned generator)")
    result.synth_seconds, result.n_images, result.generator = seconds, len(images), meta
    result.history.update(history)
    return result


def settled_loss(result: DistillResult) -> float:
    """Mean synthesis loss after the inner steps over rounds 2 onwards (round 1 starts from the
    same untrained generator whatever ε is): what the meta-learned initialisation changes."""
    after = [float(x) for x in result.history["last inner loss"][1:]]
    return sum(after) / max(len(after), 1)
