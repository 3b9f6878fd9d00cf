"""MAML with true second-order meta-gradients, first-order MAML and Reptile, on ``torch.func``.

Survey §5.1 and Fig. 7; Finn, Abbeel & Levine, "Model-Agnostic Meta-Learning for Fast Adaptation
of Deep Networks", ICML 2017 (MAML, FOMAML); Nichol, Achiam & Schulman, "On First-Order
Meta-Learning Algorithms", 2018 (Reptile).

MAML looks for an initialisation θ from which a few gradient steps on a new task's K examples
(the *support* set) give a good model on that task's *query* set:

* inner loop (Finn eq. 1), per task T_i:   θ'_i = θ - α ∇_θ L_{T_i}^{support}(f_θ)   (``steps`` times)
* outer loop (Finn eq. 2-3):               θ ← θ - β ∇_θ (1/T) Σ_i L_{T_i}^{query}(f_{θ'_i})

The outer gradient differentiates *through* the inner step, so it contains the Hessian term
(I - α ∇²L^{support}). Here the whole thing is written as functions of a parameter dict:
``functional_call`` runs the model with any parameters, ``grad`` differentiates (the inner
``grad`` nested in the outer one gives the exact second-order term), and ``vmap`` maps the
per-task function over the T tasks of a meta-batch, so one call computes all of them at once.

* **FOMAML** drops the Hessian term: the meta-gradient is ∇_{θ'} L^{query}(f_{θ'}) at the adapted θ'.
* **Reptile** (Nichol et al. Alg. 1) never differentiates *through* the inner loop: it runs k SGD
  steps on each task's data to get φ_i and moves θ towards their mean, "gradient" g = θ - mean_i φ_i.
* **ANIL** (:mod:`lfmlab.meta.anil`) is MAML whose inner loop adapts only the head: ``names=``.

:func:`meta_gradient_loop` computes the same meta-gradient one task at a time with plain
``torch.autograd`` (``create_graph=True``), the classic implementation; the tests check that
both agree to 1e-5 and ``benchmarks/meta.py`` times them.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from lfmlab.core.params import device_of
from lfmlab.meta.common import Loss, Tasks, as_tasks
from lfmlab.progress import progress

Params = dict[str, torch.Tensor]
Algorithm = Literal["maml", "fomaml", "reptile"]
Sampler = Callable[[int, torch.Generator], Tasks]  # (n_tasks, generator) -> a batch of tasks


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a dict of detached tensors (they share storage with the model)."""
    return {n: p.detach() for n, p in model.named_parameters()}


def predict(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """f_θ(x): the model run with ``params`` instead of its own (the model is not changed)."""
    return functional_call(model, params, (x,))


def adapt(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, loss: Loss,
          steps: int = 1, lr: float = 0.01, names: Sequence[str] | None = None) -> Params:
    """The inner loop on one task (Finn eq. 1): θ' = θ - α ∇_θ L(f_θ(x), y), ``steps`` times.

    x [S, ...], y [S, ...] are the task's support set. Only the parameters in ``names`` (all by
    default) are adapted; the others are returned unchanged. Under an outer ``torch.func.grad``
    the result stays differentiable with respect to ``params`` (second order).
    """
    names = list(params) if names is None else list(names)
    for _ in range(steps):
        def support_loss(fast: Params) -> torch.Tensor:
            return loss(functional_call(model, {**params, **fast}, (x,)), y)

        g = grad(support_loss)({n: params[n] for n in names})
        params = {**params, **{n: params[n] - lr * g[n] for n in names}}
    return params


def task_loss(model: nn.Module, loss: Loss, steps: int, lr: float, names: Sequence[str] | None,
              params: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    """L_{T_i}^{query}(f_{θ'_i}) for one task: adapt on the support set, score on the query set."""
    fast = adapt(model, params, sx, sy, loss, steps, lr, names)
    return loss(functional_call(model, fast, (qx,)), qy)


def meta_gradient(model: nn.Module, params: Params, tasks: Tasks, loss: Loss, steps: int = 1,
                  lr: float = 0.01, names: Sequence[str] | None = None,
                  algorithm: Algorithm = "maml") -> tuple[torch.Tensor, Params]:
    """The meta-loss and meta-gradient of a batch of T tasks, all tasks at once with ``vmap``.

    ``maml``: ∇_θ (1/T) Σ_i L_i^{query}(f_{θ'_i}), exact, through the inner loop (Finn eq. 2-3).
    ``fomaml``: (1/T) Σ_i ∇_{θ'} L_i^{query}(f_{θ'})|_{θ'=θ'_i} (first order, no Hessian).
    ``reptile``: θ - (1/T) Σ_i φ_i, φ_i = ``steps`` SGD steps on support ∪ query (Nichol Alg. 1);
    the loss returned is then the inner loop's final training loss, at φ_i.
    Returns (meta-loss, a 0-dim tensor; gradient dict shaped like ``params``).
    """
    sx, sy, qx, qy = as_tasks(tasks)
    per_task = partial(task_loss, model, loss, steps, lr, names)
    if algorithm == "maml":
        def meta_loss(p: Params) -> torch.Tensor:
            return vmap(per_task, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

        g, value = grad_and_value(meta_loss)(params)
        return value, g
    adapt_all = vmap(partial(adapt, model, loss=loss, steps=steps, lr=lr, names=names), in_dims=(None, 0, 0))
    if algorithm == "fomaml":
        fast = adapt_all(params, sx, sy)  # each entry [T, ...]

        def query_loss(f: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss(functional_call(model, f, (x,)), y)

        g, values = vmap(grad_and_value(query_loss))(fast, qx, qy)
        return values.mean(), {n: g[n].mean(0) for n in params}
    if algorithm == "reptile":
        x, y = torch.cat([sx, qx], 1), torch.cat([sy, qy], 1)   # Reptile trains on all of a task's data
        phi = adapt_all(params, x, y)

        def fitted(f: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return loss(functional_call(model, f, (x,)), y)

        value = vmap(fitted)(phi, x, y).mean()
        return value, {n: params[n] - phi[n].mean(0) for n in params}
    raise ValueError(f"unknown algorithm {algorithm!r}; use 'maml', 'fomaml' or 'reptile'")


def meta_gradient_loop(model: nn.Module, params: Params, tasks: Tasks, loss: Loss, steps: int = 1,
                       lr: float = 0.01, names: Sequence[str] | None = None,
                       algorithm: Algorithm = "maml") -> tuple[torch.Tensor, Params]:
    """The MAML/FOMAML meta-gradient the classic way: a Python loop over tasks with
    ``torch.autograd.grad(create_graph=True)`` and one backward pass per task.

    The reference for :func:`meta_gradient` (tests) and the "loop" of ``benchmarks/meta.py``.
    """
    if algorithm not in ("maml", "fomaml"):
        raise ValueError("meta_gradient_loop computes 'maml' or 'fomaml' meta-gradients")
    sx, sy, qx, qy = as_tasks(tasks)
    names = list(params) if names is None else list(names)
    leaves = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    total = torch.zeros((), device=sx.device)
    n_tasks = sx.shape[0]
    for i in range(n_tasks):
        fast = dict(leaves)
        for _ in range(steps):
            inner = loss(functional_call(model, fast, (sx[i],)), sy[i])
            # create_graph=True keeps the inner gradient differentiable: the Hessian term of MAML.
            gs = torch.autograd.grad(inner, [fast[n] for n in names], create_graph=algorithm == "maml")
            fast.update({n: fast[n] - lr * g for n, g in zip(names, gs)})
        outer = loss(functional_call(model, fast, (qx[i],)), qy[i]) / n_tasks
        outer.backward()
        total += outer.detach()
    return total, {n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in leaves.items()}


@dataclass
class MAMLConfig:
    """Hyper-parameters of :func:`meta_train` (defaults: Finn et al.'s sinusoid setting)."""

    algorithm: Algorithm = "maml"
    inner_lr: float = 0.01      # α
    inner_steps: int = 1        # gradient steps in the inner loop while meta-training
    outer_lr: float = 1e-3      # β (Adam)
    meta_batch: int = 25        # tasks per outer step
    iterations: int = 2000      # outer steps


@dataclass
class MetaResult:
    """A meta-learned initialisation: ``model`` (a new module), the meta-loss per outer step
    (``losses`` [iterations], query loss after the inner loop) and the cost."""

    model: nn.Module
    losses: torch.Tensor
    config: MAMLConfig
    seconds: float
    names: list[str] | None = None   # the parameters the inner loop adapts (None: all)

    @property
    def tasks_per_second(self) -> float:
        return self.config.iterations * self.config.meta_batch / max(self.seconds, 1e-9)


def meta_train(model: nn.Module, sample: Sampler, loss: Loss, config: MAMLConfig | None = None,
               names: Sequence[str] | None = None, generator: torch.Generator | None = None,
               desc: str | None = None) -> MetaResult:
    """Meta-train an initialisation (Finn et al. Alg. 1 and 2; Nichol et al. Alg. 1).

    ``sample(T, generator)`` returns a batch of T tasks; each outer step draws one, computes
    :func:`meta_gradient` and lets Adam apply it. ``model`` is copied, never changed; the
    returned :class:`MetaResult` holds the new initialisation.
    """
    config = config or MAMLConfig()
    model = copy.deepcopy(model)
    params = params_of(model)  # detached views: Adam's in-place steps show through them
    opt = torch.optim.Adam(model.parameters(), lr=config.outer_lr)
    losses = torch.zeros(config.iterations, device=device_of(model))  # on device: no sync per step
    start = time.perf_counter()
    for it in progress(range(config.iterations), desc=desc or config.algorithm):
        tasks = sample(config.meta_batch, generator)
        value, g = meta_gradient(model, params, tasks, loss, config.inner_steps, config.inner_lr,
                                 names, config.algorithm)
        for n, p in model.named_parameters():
            p.grad = g[n]
        opt.step()
        losses[it] = value.detach()
    seconds = time.perf_counter() - start
    return MetaResult(model.eval(), losses.cpu(), config, seconds, None if names is None else list(names))


@dataclass
class Adaptation:
    """Query loss and metric after 0, 1, ..., ``steps`` inner steps, per task: [steps + 1, T]."""

    loss: torch.Tensor
    metric: torch.Tensor | None

    def after(self, step: int = -1) -> torch.Tensor:
        """Per-task metric (or loss, when there is no metric) after ``step`` steps, [T]."""
        return (self.metric if self.metric is not None else self.loss)[step]


def adaptation(model: nn.Module, tasks: Tasks, loss: Loss, steps: int = 10, lr: float = 0.01,
               names: Sequence[str] | None = None, metric: Loss | None = None,
               chunk_size: int | None = 256) -> Adaptation:
    """Fine-tune from the model's weights on each task's support set (plain SGD, ``lr``) and
    record the query loss (and ``metric``) after every step; all tasks at once with ``vmap``.

    This is the meta-test protocol for every initialisation (MAML's, a baseline's, a random
    one). The model is unchanged.
    """
    sx, sy, qx, qy = as_tasks(tasks)
    params = params_of(model)

    def one(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor):
        p, losses, metrics = params, [], []
        for s in range(steps + 1):
            pred = functional_call(model, p, (qx,))
            losses.append(loss(pred, qy))
            metrics.append(metric(pred, qy) if metric is not None else losses[-1])
            if s < steps:
                p = adapt(model, p, sx, sy, loss, 1, lr, names)
        return torch.stack(losses), torch.stack(metrics)

    with torch.no_grad():  # torch.func.grad still differentiates inside; nothing else is recorded
        L, M = vmap(one, chunk_size=chunk_size)(sx, sy, qx, qy)  # [T, steps + 1]
    return Adaptation(L.T.contiguous(), M.T.contiguous() if metric is not None else None)


def adaptation_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_eval: torch.Tensor, loss: Loss,
                     steps: int = 10, lr: float = 0.01, names: Sequence[str] | None = None) -> torch.Tensor:
    """Predictions on ``x_eval`` [N, ...] after 0, 1, ..., ``steps`` inner steps on one task's
    support set (x [S, ...], y [S, ...]): [steps + 1, N, ...]. For plots and panels; the model is unchanged."""
    p, out = params_of(model), []
    with torch.no_grad():
        for s in range(steps + 1):
            out.append(functional_call(model, p, (x_eval,)))
            if s < steps:
                p = adapt(model, p, x, y, loss, 1, lr, names)
    return torch.stack(out)
