"""Model inversion: synthesise images that a trained classifier assigns to chosen classes.

Survey §3.1 (noise optimisation, eq. 1, 3 and 4); DeepInversion: Yin et al., "Dreaming to
Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020. Shared by the
distillation notebook (data-free KD) and by data-free meta-learning (:mod:`lfmlab.meta.dfml`).

Start from noise x̂ [N, 1, 8, 8] and minimise, by gradient descent on the pixels (eq. 1)::

    L(x̂) = CE(f(x̂), y)                                  # the model must call x̂ class y
         + α_tv R_TV(x̂) + α_l2 ||x̂||²                   # image prior (eq. 3): smooth, not too bright
         + α_bn Σ_l ||μ_l(x̂) - μ_l||² + ||σ_l(x̂) - σ_l||²  # BatchNorm statistics (eq. 4)

The last term is DeepInversion's: every BatchNorm layer stores the mean μ_l and variance σ_l²
of its input over the real training data; the synthetic batch must reproduce them. It is used
when the model has BatchNorm layers and ``bn > 0``. A random shift of the batch each step
(``jitter``, as in DeepInversion) stops the images from becoming pixel-exact adversarial noise.

``gradient="zeroth_order"`` treats the model as a black box that only returns outputs: the
gradient of the class term is estimated from ``queries`` random probes per image,
ĝ = (1/(q μ)) Σ_j [L(x̂ + μ u_j) - L(x̂)] u_j with u_j ~ N(0, I) (Gaussian smoothing, Nesterov &
Spokoiny 2017). BiDf-MKD's estimator differs in its directions: u_j uniform on the unit sphere,
scaled by d/(q μ) with d the number of pixels; both estimate ∇L as μ → 0, with similar variance.
The prior's gradient is exact, BatchNorm matching is off.

The class term can also be *soft*: ``targets`` [N, C] of probabilities, matched at a
temperature τ, CE(y, softmax(f(x̂)/τ)). ZSKD's data impressions (:mod:`lfmlab.distill.zskd`)
use it with Dirichlet-sampled targets and τ = 20.

>>> from lfmlab import zoo
>>> teacher = zoo.load("digits-teacher").model
>>> out = synthesise(teacher, torch.arange(10).repeat(4), InversionConfig(steps=200))
>>> out.images.shape, out.confidence.mean()        # [40, 1, 8, 8]; p(target) under the teacher
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.params import device_of, frozen

Classifier = nn.Module | Callable[[torch.Tensor], torch.Tensor]  # images [N, 1, 8, 8] -> logits [N, C]


@dataclass
class InversionConfig:
    """Loss weights and optimiser settings of :func:`synthesise` (defaults suit 8x8 digits)."""

    steps: int = 200
    lr: float = 0.05               # Adam on the pixels
    tv: float = 0.05               # α_tv, total variation (eq. 3)
    l2: float = 0.001              # α_l2, squared pixel norm (eq. 3)
    bn: float = 0.1                # α_bn, BatchNorm statistics (eq. 4); ignored without BN layers
    jitter: int = 1                # random shift of up to this many pixels per step (0: none)
    image_shape: tuple[int, int, int] = (1, 8, 8)
    ce: float = 1.0                # weight of the class term CE(f(x̂)/τ, y)
    temperature: float = 1.0       # τ of the class term (ZSKD: 20)
    gradient: Literal["autograd", "zeroth_order"] = "autograd"
    queries: int = 32              # zeroth order: random probes per image and step
    mu: float = 0.02               # zeroth order: probe radius


@dataclass
class Inversion:
    """Synthetic images [N, 1, 8, 8] in [0, 1] with their targets ([N] labels, or [N, C] soft
    targets); the loss terms per step (``history[name]`` [steps]); the model's p(target | image)
    at the end [N] (for soft targets: p(argmax of the target)); the number
    of images the model was queried on; wall time."""

    images: torch.Tensor
    targets: torch.Tensor
    confidence: torch.Tensor
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    model_queries: int = 0
    seconds: float = 0.0


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """R_TV per image: mean squared difference between neighbouring pixels, x [N, C, H, W] -> [N]."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


def bn_layers(model: Classifier) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose running statistics eq. 4 can match (none for a black box)."""
    if not isinstance(model, nn.Module):
        return []
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None and m.running_var is not None]


@contextmanager
def bn_statistics(model: Classifier) -> Iterator[list[torch.Tensor]]:
    """While active, every forward pass appends Σ-terms of eq. 4 (one per BN layer) to the list it yields.

    Forward hooks read each BN layer's input [N, C, ...]: its per-channel batch mean and
    standard deviation are compared with the layer's running mean and sqrt(running var).
    """
    terms: list[torch.Tensor] = []

    def hook(module: nn.modules.batchnorm._BatchNorm, inputs: tuple[torch.Tensor, ...], _out) -> None:
        h = inputs[0]
        dims = [0] + list(range(2, h.dim()))
        mean, std = h.mean(dims), (h.var(dims, unbiased=False) + module.eps).sqrt()
        terms.append((mean - module.running_mean).pow(2).sum()
                     + (std - (module.running_var + module.eps).sqrt()).pow(2).sum())

    handles = [m.register_forward_hook(hook) for m in bn_layers(model)]
    try:
        yield terms
    finally:
        for h in handles:
            h.remove()


def _offsets(jitter: int, generator: torch.Generator | None) -> tuple[int, int]:
    """A random shift (rows, columns) of at most ``jitter`` pixels, for the whole batch."""
    if jitter <= 0:
        return 0, 0
    dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return int(dx), int(dy)


def _zeroth_order_grad(model: Classifier, x: torch.Tensor, targets: torch.Tensor, queries: int,
                       mu: float, generator: torch.Generator | None,
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate ∇_x CE(f(x), y) per image from outputs only: one batched call on [(q + 1) N] images."""
    n = x.shape[0]
    u = torch.randn((queries, *x.shape), generator=generator, device="cpu").to(x)    # [q, N, 1, 8, 8]
    probes = torch.cat([x[None], x[None] + mu * u]).flatten(0, 1)                    # [(q+1) N, 1, 8, 8]
    with torch.no_grad():
        logits = model(probes)
    repeated = targets.repeat(queries + 1, *([1] * (targets.dim() - 1)))         # [(q+1) N] or [(q+1) N, C]
    ce = F.cross_entropy(logits / temperature, repeated, reduction="none").view(queries + 1, n)
    delta = (ce[1:] - ce[:1]) / mu                                                   # [q, N]
    g = (delta.view(queries, n, *([1] * (x.dim() - 1))) * u).mean(0)                 # [N, 1, 8, 8]
    return g, ce[0]


def synthesise(model: Classifier, targets: torch.Tensor, config: InversionConfig | None = None,
               generator: torch.Generator | None = None, init: torch.Tensor | None = None,
               callback: Callable[[int, torch.Tensor], None] | None = None,
               extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Inversion:
    """Invert ``model``: images [N, 1, 8, 8] that it classifies as ``targets`` [N] (all in one batch).

    ``model`` is a classifier module (white box: exact gradients, BatchNorm statistics when it
    has BN layers) or, with ``config.gradient="zeroth_order"``, any function from images to
    logits (black box). ``init`` [N, 1, 8, 8] replaces the default start (uniform noise in
    [0.25, 0.75]). ``targets`` may be soft, [N, C] probabilities. ``callback(step, images)``
    is called ten times along the way (live plots). ``extra(x̂, logits)`` (white box only) adds
    a term of the caller's to the loss, e.g. Adaptive DeepInversion's competition with a student
    (history "extra"). The model is unchanged on return (mode and requires_grad restored).
    """
    cfg = config or InversionConfig()
    targets = torch.as_tensor(targets)
    n = int(targets.shape[0])
    if isinstance(model, nn.Module):
        dev = device_of(model)
    else:
        dev = targets.device
    targets = targets.to(dev)
    soft = targets.dim() == 2
    if soft:
        targets = targets.float()
    if init is None:
        init = 0.25 + 0.5 * torch.rand((n, *cfg.image_shape), generator=generator)
    x = init.detach().clone().to(dev).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    black_box = cfg.gradient == "zeroth_order"
    if cfg.gradient not in ("autograd", "zeroth_order"):
        raise ValueError(f"gradient must be 'autograd' or 'zeroth_order', got {cfg.gradient!r}")
    use_bn = cfg.bn > 0 and not black_box and bool(bn_layers(model))
    if extra is not None and black_box:
        raise ValueError("an extra loss term needs gradients: use gradient='autograd'")
    history = {k: torch.zeros(cfg.steps, device=dev) for k in ("ce", "tv", "l2", "bn", "extra", "total")}
    queries = 0
    start = time.perf_counter()
    with frozen(model), bn_statistics(model if use_bn else nn.Identity()) as bn_terms:
        for step in range(cfg.steps):
            shift = _offsets(cfg.jitter, generator)
            xj = torch.roll(x, shifts=shift, dims=(-2, -1))
            tv, l2 = total_variation(x).mean(), x.pow(2).flatten(1).sum(1).mean()
            prior = cfg.tv * tv + cfg.l2 * l2
            bn_terms.clear()
            if black_box:
                g_ce, ce_per = _zeroth_order_grad(model, xj.detach(), targets, cfg.queries, cfg.mu, generator,
                                                  cfg.temperature)
                queries += (cfg.queries + 1) * n
                ce, bn, more = ce_per.mean(), torch.zeros((), device=dev), torch.zeros((), device=dev)
                opt.zero_grad(set_to_none=True)
                prior.backward()
                unshift = (-shift[0], -shift[1])  # the gradient w.r.t. x is the shifted-back one
                x.grad += cfg.ce * torch.roll(g_ce, shifts=unshift, dims=(-2, -1)) / n  # d mean(CE) / dx
                total = cfg.ce * ce + prior.detach()
            else:
                logits = model(xj)
                ce = F.cross_entropy(logits / cfg.temperature, targets)
                queries += n
                bn = torch.stack(bn_terms).sum() if bn_terms else torch.zeros((), device=dev)
                more = extra(xj, logits) if extra is not None else torch.zeros((), device=dev)
                total = cfg.ce * ce + prior + cfg.bn * bn + more
                opt.zero_grad(set_to_none=True)
                total.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            for k, v in (("ce", ce), ("tv", tv), ("l2", l2), ("bn", bn), ("extra", more), ("total", total)):
                history[k][step] = v.detach()
            if callback is not None and (step + 1) % max(cfg.steps // 10, 1) == 0:
                callback(step + 1, x.detach())
        with torch.no_grad():
            probs = torch.softmax(model(x.detach()), -1)
    labels = targets.argmax(-1) if soft else targets
    confidence = probs.gather(1, labels[:, None]).squeeze(1)
    history = {k: v.cpu() for k, v in history.items()}
    return Inversion(x.detach(), targets, confidence, history, queries + n, time.perf_counter() - start)
