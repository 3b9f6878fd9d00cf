"""Zero-shot KD with Data Impressions (Nayak et al., ICML 2019; survey §3.1, [108]).

ZSKD never uses BatchNorm statistics or an image prior: everything it knows about the data
comes from the teacher's *final layer*. Its weights w_c [C, D] say which classes the teacher
finds alike, and ZSKD models the teacher's softmax outputs on class-c data with a Dirichlet:

1. class similarity  s_ij = cos(w_i, w_j), min-max normalised to [0, 1] per row (s_cc = 1);
2. for class c draw soft targets y ~ Dir(β s_c); a large β gives soft, similarity-shaped
   targets, a small β nearly one-hot ones (the paper mixes β = 1 and β = 0.1);
3. a *data impression* is an image x̂ whose tempered output matches y: minimise
   CE(y, softmax(T(x̂)/τ)) with τ = 20 on the pixels (the shared optimiser of
   :mod:`lfmlab.core.inversion`, with soft targets and ``bn = tv = l2 = 0``);
4. Hinton KD on the impressions (step 2 of survey eq. 2).

>>> S = class_similarity(teacher)                   # [10, 10], 1 on the diagonal
>>> y = dirichlet_targets(S, per_class=5, betas=(1.0, 0.1))   # [100, 10] soft targets
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.inversion import InversionConfig
from lfmlab.distill.common import Callback, DistillResult, Weights
from lfmlab.distill.deepinversion import DIConfig, class_balanced_pool
from lfmlab.distill.kd import KDConfig, distill

__all__ = ["ZSKDConfig", "class_similarity", "dirichlet_targets", "zskd", "WEIGHTS"]

WEIGHTS = Weights(ce=1.0)
TERMS = ("ce", "bn", "tv", "l2")
MIN_CONCENTRATION = 1e-2   # Dir(α) needs α > 0; the least similar class would get exactly 0


@dataclass
class ZSKDConfig:
    """``per_class`` impressions of each class, half of them at each β of ``betas``."""

    per_class: int = 50
    betas: tuple[float, ...] = (1.0, 0.1)
    inversion: InversionConfig = field(default_factory=lambda: InversionConfig(
        steps=200, temperature=20.0, tv=0.0, l2=0.0, bn=0.0, jitter=1))
    kd: KDConfig = field(default_factory=lambda: KDConfig(steps=1000, jitter=1))

    def with_weights(self, w: Weights) -> "ZSKDConfig":
        out = copy.deepcopy(self)
        out.inversion.ce, out.inversion.bn, out.inversion.tv, out.inversion.l2 = w.ce, w.bn, w.tv, w.l2
        return out


def class_similarity(teacher: nn.Module) -> torch.Tensor:
    """s [C, C]: cosine similarity of the final layer's class weight vectors, each row min-max
    normalised to [0, 1] (step 1). Reads ``teacher.head`` (or the last ``nn.Linear``)."""
    head = getattr(teacher, "head", None)
    if not isinstance(head, nn.Linear):
        linears = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("ZSKD needs a teacher whose final layer is an nn.Linear")
        head = linears[-1]
    w = F.normalize(head.weight.detach(), dim=1)                     # [C, D]
    cos = w @ w.T                                                    # [C, C]
    lo, hi = cos.min(1, keepdim=True).values, cos.max(1, keepdim=True).values
    return (cos - lo) / (hi - lo).clamp_min(1e-8)


def dirichlet_targets(similarity: torch.Tensor, per_class: int, betas: Sequence[float] = (1.0, 0.1),
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Soft targets [per_class * C, C] ordered like 0, 1, ..., C-1, 0, 1, ... (step 2).

    Row c of ``similarity`` times β is the concentration of class c's Dirichlet; the
    impressions of a class are split evenly over the βs. Sampled on the CPU with ``generator``
    through Gamma variates (y_k = g_k / Σ g, g_k ~ Gamma(α_k, 1)), so a seed reproduces them.
    """
    sim = similarity.detach().float().cpu()
    n_classes = sim.shape[0]
    beta = torch.tensor([betas[(i * len(betas)) // per_class] for i in range(per_class)])     # [per_class]
    alpha = (beta[:, None, None] * sim[None]).clamp_min(MIN_CONCENTRATION)                    # [per_class, C, C]
    alpha = alpha.reshape(-1, n_classes)                                                     # [per_class C, C]
    g = _gamma(alpha, generator)
    return (g / g.sum(-1, keepdim=True)).to(similarity.device)


def _gamma(alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(α, 1) samples with a seeded generator (torch's own sampler takes none)."""
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.gamma(alpha.numpy().astype("float64"))).float().clamp_min(1e-12)


def zskd(teacher: nn.Module, student: nn.Module, config: ZSKDConfig | None = None,
         test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> DistillResult:
    """Data impressions (steps 1-3) then KD (step 4). Teacher and student are unchanged on return."""
    cfg = config or ZSKDConfig()
    sim = class_similarity(teacher)
    targets = dirichlet_targets(sim, cfg.per_class, cfg.betas, generator)                    # [M, C]
    pool_cfg = DIConfig(per_class=cfg.per_class, n_classes=sim.shape[0], inversion=cfg.inversion, kd=cfg.kd)
    images, _, seconds, history = class_balanced_pool(teacher, pool_cfg, generator, targets=targets,
                                                      callback=callback)
    result = distill(teacher, student, images, cfg.kd, test, generator=generator, callback=callback,
                     method="ZSKD (data impressions)")
    result.synth_seconds, result.n_images = seconds, len(images)
    result.history.update({f"synthesis {k}": v for k, v in history.items()})
    return result
