"""DeepDream prior and DeepInversion: data-free KD by noise optimisation (survey §3.1, eq. 1-4).

Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020
(survey [110]); the image prior follows DeepDream (Mordvintsev et al. 2015, survey [109]).

Step 1 (eq. 1): start from noise and descend, on the pixels of a class-balanced batch x̂,

    L(x̂) = CE(T(x̂), y) + α_tv R_TV(x̂) + α_l2 ||x̂||²                   (eq. 3, "DeepDream")
                        + α_bn Σ_l ||μ_l(x̂) - μ_l||² + ||σ_l(x̂) - σ_l||²    (eq. 4, "DeepInversion")

The BatchNorm term asks the synthetic batch to reproduce, layer by layer, the feature mean
and variance that the teacher's BN layers stored while it saw the real data: a free summary
of the training distribution that makes the images look like digits, not like adversarial
patterns that merely excite the right logit. Step 2 (eq. 2): Hinton KD on the images.

The pixels are optimised by :func:`lfmlab.core.inversion.synthesise` (shared with data-free
meta-learning); this module adds the class-balanced pool and the distillation.

Differences from the reference code (NVlabs/DeepInversion), by choice: the BN term follows the
survey's eq. 4, squared norms of the differences of the means and of the *standard deviations*;
the official code sums unsquared L2 norms of the differences of the means and of the
*variances*. Adaptive DeepInversion (the competition term that rewards images on which teacher
and student disagree) is :mod:`adaptive_di`.

>>> r = deepinversion(teacher, student, DIConfig(per_class=50), test=(d.test.x, d.test.y))
>>> r.accuracy, r.images.shape          # the student's real test accuracy; [100, 1, 8, 8]
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lfmlab.core.inversion import Inversion, InversionConfig, synthesise
from lfmlab.core.params import device_of
from lfmlab.distill.common import Callback, DistillResult, Weights
from lfmlab.distill.kd import KDConfig, distill

__all__ = ["DIConfig", "deepinversion", "deepdream", "class_balanced_pool", "WEIGHTS"]

# the defaults, as synthesis-loss weights (the panel's sliders)
WEIGHTS = Weights(ce=1.0, bn=0.1, tv=0.05, l2=0.001)
TERMS = ("ce", "bn", "tv", "l2")


@dataclass
class DIConfig:
    """``per_class`` images of each class, optimised ``inversion.steps`` steps in batches of
    ``batch`` images (all at once when None), then ``kd`` (jitter 1: each image also shifted
    by one pixel)."""

    per_class: int = 50
    n_classes: int = 10
    batch: int | None = None
    inversion: InversionConfig = field(default_factory=lambda: InversionConfig(steps=200))
    kd: KDConfig = field(default_factory=lambda: KDConfig(steps=1000, jitter=1))

    def with_weights(self, w: Weights) -> "DIConfig":
        """A copy whose loss weights are ``w`` (its ce, bn, tv, l2; other terms do not apply)."""
        w = copy.copy(w).check()
        out = copy.deepcopy(self)
        out.inversion.ce, out.inversion.bn, out.inversion.tv, out.inversion.l2 = w.ce, w.bn, w.tv, w.l2
        return out


def class_balanced_pool(teacher: nn.Module, config: DIConfig, generator: torch.Generator | None = None,
                        targets: torch.Tensor | None = None,
                        callback: Callback | None = None) -> tuple[torch.Tensor, torch.Tensor, float, dict]:
    """Synthesise ``per_class`` x ``n_classes`` images (step 1). ``targets`` (labels [M] or
    soft targets [M, C]) replaces the default 0, 1, ..., 9, 0, 1, ... Returns (images
    [M, 1, 8, 8], targets, seconds, history of the last batch)."""
    dev = device_of(teacher)
    if targets is None:
        targets = torch.arange(config.n_classes).repeat(config.per_class)                     # [M]
    targets = targets.to(dev)
    batch = config.batch or len(targets)
    images, history, start = [], {}, time.perf_counter()
    for i in range(0, len(targets), batch):
        def live(step: int, x: torch.Tensor, i: int = i) -> None:
            if callback is not None:
                callback("synthesis", i // batch * config.inversion.steps + step, x[:100].cpu(), None)
        out: Inversion = synthesise(teacher, targets[i:i + batch], config.inversion, generator,
                                    callback=live if callback is not None else None)
        images.append(out.images)
        history = out.history
    return torch.cat(images), targets, time.perf_counter() - start, history


def deepinversion(teacher: nn.Module, student: nn.Module, config: DIConfig | None = None,
                  test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
                  callback: Callback | None = None, method: str | None = None) -> DistillResult:
    """DeepInversion (eq. 1, 3, 4) then KD. ``config.inversion.bn = 0`` is the DeepDream
    ablation (:func:`deepdream`). The teacher and the given student are unchanged on return."""
    cfg = config or DIConfig()
    name = method or ("DeepInversion" if cfg.inversion.bn > 0 else "DeepDream prior (DI without BN)")
    images, targets, seconds, history = class_balanced_pool(teacher, cfg, generator, callback=callback)
    result = distill(teacher, student, images, cfg.kd, test, generator=generator, callback=callback, method=name)
    result.synth_seconds, result.n_images = seconds, len(images)
    result.history.update({f"synthesis {k}": v for k, v in history.items()})
    return result


def deepdream(teacher: nn.Module, student: nn.Module, config: DIConfig | None = None,
              test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
              callback: Callback | None = None) -> DistillResult:
    """DeepInversion without the BatchNorm term: only the class loss and the prior of eq. 3."""
    cfg = copy.deepcopy(config or DIConfig())
    cfg.inversion.bn = 0.0
    return deepinversion(teacher, student, cfg, test, generator, callback)
