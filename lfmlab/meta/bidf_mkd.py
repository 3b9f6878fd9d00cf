"""BiDf-MKD: black-box data-free meta-learning by bi-level meta knowledge distillation (Hu et al.,
"Learning to Learn from APIs: Black-Box Data-Free Meta-Learning", ICML 2023; survey §5.2, [188]).

The models are **APIs**: images in, output probabilities out; no weights, no gradients. The
baseline (``dfml.invert_zoo(black_box=True)`` then :func:`lfmlab.meta.dfml.meta_train`) recovers
pseudo-images once with a zero-order gradient and runs MAML on them with hard labels. BiDf-MKD
also *distils the APIs' soft outputs into the meta-learner, at both levels of MAML*:

* **zero-order recovery** of an API's images: per image n, with d pixels and q directions u_j
  uniform on the unit sphere (the paper's estimator, forward differences)::

      ĝ_n = (d / q) Σ_j [ℓ_n(x_n + μ u_j) − ℓ_n(x_n)] / μ · u_j,     ℓ_n(x) = CE(A_i(x), y_n)

* **bi-level distillation** on one API A_i: a support set Ŝ_i and a query set Q̂_i recovered from
  it; the inner loop distils A_i's outputs on Ŝ_i into a copy of θ, the outer loss distils them
  on Q̂_i into the adapted θ_i, and its gradient flows through the inner loop (second order)::

      θ_i = θ − α ∇_θ KL(A_i(Ŝ_i) ‖ f(Ŝ_i; θ))          (k steps)
      L_outer,i = KL(A_i(Q̂_i) ‖ f(Q̂_i; θ_i))

* the **boundary query set** (after ``boundary_start`` of the run): Q̂_i is recovered with the
  extra term −λ ‖A_i(x) − f(x; θ_i)‖₁ on the images where the API and the adapted student still
  agree on the label, which pushes the queries to where the student has not yet learned the API;
* **task memory replay**: every recovered image joins a memory (a ring buffer per pseudo-class);
  most meta-training steps are plain MAML (cross-entropy, hard labels) on 5-way tasks drawn from
  the memory across APIs.

Simplifications, all stated (reference: Egg-Hu/BiDf-MKD, ``mainKD.py``):

* images are recovered by zero-order descent on the pixels, warm-started from the memory, not by
  a generator re-initialised at every call (the generator's implicit prior is lost);
* q = 16 directions and μ = 0.005 (reference: 100 and 0.005); 10 support and 10 query images per
  class (reference: 30 and 30); 5 inner distillation steps (reference: 10); no flip augmentation
  (a flipped digit is another digit);
* a distillation episode runs every ``kd_every`` meta-iterations, not when the training accuracy
  has plateaued for 200 meta-iterations (a trigger that a few hundred meta-iterations would
  almost never reach); its gradient joins the replay meta-batch as one more task;
* the distillation loss is the paper's KL(p_API ‖ p_student) (``log_softmax``, mean over the
  batch); the reference code's ``kl_div(softmax, softmax)`` is not a KL and is tiny in scale;
* the meta-learner's inner loop and meta-batch are the library's digit MAML settings.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from lfmlab import validate
from lfmlab.meta import maml, pools
from lfmlab.meta.common import cross_entropy
from lfmlab.meta.dfml import PseudoData, Zoo
from lfmlab.progress import progress

__all__ = ["BiDfMKDConfig", "BiDfMKDResult", "bidf_mkd", "zero_order_recover", "kl_soft"]

Api = Callable[[torch.Tensor], torch.Tensor]   # images [N, 1, 8, 8] -> logits [N, C], no gradient


@dataclass
class BiDfMKDConfig:
    """The distillation's settings (the meta-learner's own are a :class:`maml.MAMLConfig`)."""

    meta: maml.MAMLConfig = field(default_factory=lambda: maml.MAMLConfig(
        "maml", inner_lr=0.4, inner_steps=5, meta_batch=16, iterations=400))
    k_shot: int = 1                 # replay tasks
    n_query: int = 15
    kd_every: int = 10              # a bi-level distillation episode every this many meta-iterations (0: none)
    kd_support: int = 10            # images per class of Ŝ_i and of Q̂_i
    kd_query: int = 10
    kd_inner_steps: int = 5
    recover_steps: int = 40         # zero-order descent steps per recovery
    recover_lr: float = 0.05        # Adam on the pixels
    queries: int = 16               # q directions per image and step
    mu: float = 0.005               # probe radius
    boundary_start: float = 0.3     # share of the run after which Q̂_i is a boundary query set
    boundary_weight: float = 1.0    # λ of the boundary term


@dataclass
class BiDfMKDResult:
    """The meta-learned initialisation, the final memory, and the record: ``losses`` (replay
    meta-loss per meta-iteration), ``kd_losses`` (L_outer of each distillation episode),
    ``api_queries`` (images sent to the APIs, recovery included), wall time."""

    model: nn.Module
    memory: PseudoData
    losses: torch.Tensor
    kd_losses: list[float]
    kd_iterations: list[int]
    api_queries: int
    seconds: float


def kl_soft(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_target ‖ softmax(logits)), mean over the batch: the distillation loss of both levels."""
    return F.kl_div(F.log_softmax(logits, -1), target_probs, reduction="batchmean")


def zero_order_recover(api: Api, x0: torch.Tensor, labels: torch.Tensor, steps: int, lr: float, queries: int,
                       mu: float, generator: torch.Generator | None = None,
                       extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, int]:
    """Images that ``api`` calls ``labels``, by Adam on the pixels with BiDf-MKD's zero-order
    gradient (unit-sphere directions, scale d/q, forward differences). ``extra(x, api_logits)``
    adds a per-image term to the loss (the boundary term). Returns (images in [0, 1], queries)."""
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    n, d = x.shape[0], x[0].numel()
    sent = 0
    for _ in range(steps):
        u = torch.randn((queries, *x.shape), generator=generator).to(x)
        u = u / u.flatten(2).norm(dim=2).view(queries, n, *([1] * (x.dim() - 1)))
        with torch.no_grad():
            probes = torch.cat([x[None], x[None] + mu * u]).flatten(0, 1)              # [(q+1) N, ...]
            logits = api(probes)
            loss = F.cross_entropy(logits, labels.repeat(queries + 1), reduction="none")
            if extra is not None:
                loss = loss + extra(probes, logits)
            loss = loss.view(queries + 1, n)
            delta = (loss[1:] - loss[:1]) / mu                                          # [q, N]
            g = (d / queries) * (delta.view(queries, n, *([1] * (x.dim() - 1))) * u).sum(0)
        sent += (queries + 1) * n
        x.grad = g
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach(), sent


def _api(model: nn.Module) -> Api:
    def call(x: torch.Tensor) -> torch.Tensor:       # outputs only
        with torch.no_grad():
            return model(x)
    return call


def bidf_mkd(meta_model: nn.Module, zoo: Zoo, start: PseudoData, config: BiDfMKDConfig | None = None,
             generator: torch.Generator | None = None) -> BiDfMKDResult:
    """Meta-train a copy of ``meta_model`` from the APIs ``zoo`` (used as black boxes only) with
    the memory ``start`` (``invert_zoo(black_box=True)`` output). Nothing given is changed.
    ``config.kd_every = 0`` leaves replay alone: the baseline, zero-order inversion + MAML."""
    cfg = config or BiDfMKDConfig()
    validate.number("kd_every", cfg.kd_every, 0, None, integer=True, fix="Use 10, or 0 for no distillation.")
    validate.number("mu", cfg.mu, 0.0, None, lo_open=True, fix="Try 0.005.")
    if not start.black_box:
        raise ValueError("BiDf-MKD learns from black boxes: pass the memory of invert_zoo(black_box=True)")
    n_way, meta = start.n_way, cfg.meta
    if len(zoo) * n_way != start.pool.shape[0]:
        raise ValueError(f"the memory holds {start.pool.shape[0]} classes; the zoo has {len(zoo)} x {n_way}")
    memory = start.pool.detach().clone()                                  # [N * n_way, M, 1, 8, 8]
    slots = memory.shape[1]
    ring = torch.zeros(memory.shape[0], dtype=torch.long)                 # next slot to overwrite, per class
    apis = [_api(m.eval()) for m in zoo.models]
    model = copy.deepcopy(meta_model)
    params = maml.params_of(model)
    opt = torch.optim.Adam(model.parameters(), lr=meta.outer_lr)
    boundary_from = int(round(cfg.boundary_start * meta.iterations))
    losses, kd_losses, kd_its, sent = torch.zeros(meta.iterations), [], [], 0
    labels_s = torch.arange(n_way).repeat_interleave(cfg.kd_support).to(memory.device)
    labels_q = torch.arange(n_way).repeat_interleave(cfg.kd_query).to(memory.device)
    begin = time.perf_counter()

    def warm(i: int, per: int) -> torch.Tensor:   # start images for API i: a random slice of its memory
        rows = torch.randint(slots, (n_way, per), generator=generator)
        return memory[i * n_way:(i + 1) * n_way][torch.arange(n_way)[:, None], rows].flatten(0, 1)

    def store(i: int, images: torch.Tensor, per: int) -> None:
        for j, imgs in enumerate(images.view(n_way, per, *images.shape[1:])):
            c = i * n_way + j
            for img in imgs:
                memory[c, ring[c] % slots] = img
                ring[c] += 1

    for it in progress(range(meta.iterations), desc="BiDf-MKD"):
        tasks = pools.episodes(memory, n_way, cfg.k_shot, cfg.n_query, meta.meta_batch, generator)
        value, g = maml.meta_gradient(model, params, tasks, cross_entropy, meta.inner_steps, meta.inner_lr)
        if cfg.kd_every and it % cfg.kd_every == 0:
            i = int(torch.randint(len(zoo), (1,), generator=generator))
            s_x, n_s = zero_order_recover(apis[i], warm(i, cfg.kd_support), labels_s, cfg.recover_steps,
                                          cfg.recover_lr, cfg.queries, cfg.mu, generator)
            s_p = torch.softmax(apis[i](s_x), -1)
            fast = maml.adapt(model, params, s_x, s_p, kl_soft, cfg.kd_inner_steps, meta.inner_lr)
            fast = {k: v.detach() for k, v in fast.items()}
            extra = None
            if it >= boundary_from and cfg.boundary_weight > 0:
                def extra(x, api_logits, _fast=fast):
                    with torch.no_grad():
                        student = functional_call(model, _fast, (x,))
                    agree = (api_logits.argmax(-1) == student.argmax(-1)).float()
                    return -cfg.boundary_weight * agree * (api_logits - student).abs().sum(-1)
            q_x, n_q = zero_order_recover(apis[i], warm(i, cfg.kd_query), labels_q, cfg.recover_steps,
                                          cfg.recover_lr, cfg.queries, cfg.mu, generator, extra)
            q_p = torch.softmax(apis[i](q_x), -1)
            sent += n_s + n_q + len(s_x) + len(q_x)

            def outer(p: maml.Params) -> torch.Tensor:
                adapted = maml.adapt(model, p, s_x, s_p, kl_soft, cfg.kd_inner_steps, meta.inner_lr)
                return kl_soft(functional_call(model, adapted, (q_x,)), q_p)

            g_kd, kd_value = grad_and_value(outer)(params)
            t = meta.meta_batch
            g = {k: (t * g[k] + g_kd[k]) / (t + 1) for k in g}               # one more task in the batch
            kd_losses.append(float(kd_value.detach()))
            kd_its.append(it)
            store(i, s_x, cfg.kd_support)
            store(i, q_x, cfg.kd_query)
        for n, p in model.named_parameters():
            p.grad = g[n]
        opt.step()
        losses[it] = float(value.detach())
    seconds = time.perf_counter() - begin
    with torch.no_grad():
        per_model = memory.view(len(zoo), n_way, *memory.shape[1:])
        probs = [torch.softmax(apis[i](per_model[i].flatten(0, 1)), -1).view(n_way, -1, n_way)
                 for i in range(len(zoo))]
    conf = float(torch.stack([p.diagonal(dim1=0, dim2=2).mean() for p in probs]).mean())
    out = PseudoData(memory, torch.cat(probs), conf, start.model_queries + sent, start.seconds + seconds, True)
    return BiDfMKDResult(model.eval(), out, losses, kd_losses, kd_its, sent, seconds)
