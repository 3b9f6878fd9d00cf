"""Mode connectivity (survey §4.2.2): the loss along paths between two trained networks.

* **Linear path** (Frankle et al. 2020; survey eq. 9): θ(t) = (1 − t) θ_A + t θ_B. The *loss
  barrier* is the largest rise of the loss above the straight line between the endpoint losses,

      B = max_t [ L(θ(t)) − ((1 − t) L(θ_A) + t L(θ_B)) ],

  (and the same with accuracy, as a drop). Independently trained networks have a high barrier;
  after re-basin (:mod:`rebasin`) it mostly vanishes.
* **Bezier curve** (Garipov et al., "Loss surfaces, mode connectivity, and fast ensembling of
  DNNs", NeurIPS 2018): a quadratic curve θ(t) = (1 − t)² θ_A + 2t(1 − t) θ_C + t² θ_B whose
  control point θ_C is trained, with the endpoints fixed, to minimise E_{t ~ U(0,1)} L(θ(t)). The
  two modes turn out to be joined by a path of low loss: they were never really isolated.

Whole paths are evaluated at once: the m points are stacked and run with ``torch.func.vmap``.
Models with BatchNorm need their statistics recomputed at every point (not done here; the
digits MLPs have none).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.params import evaluating
from lfmlab.core.state import StateDict, functional_eval, merge_keys
from lfmlab.reuse.interpolate import path_states

__all__ = ["Path", "barrier", "linear_path", "bezier_point", "bezier_states", "BezierCurve", "bezier_curve"]


@dataclass
class Path:
    """Loss and accuracy at points t [m] of a path from A (t = 0) to B (t = 1), and its barriers."""

    t: torch.Tensor
    loss: torch.Tensor
    accuracy: torch.Tensor
    kind: str = "linear"

    @property
    def loss_barrier(self) -> float:
        """max_t L(t) − [(1 − t) L(0) + t L(1)] (≥ 0 up to noise)."""
        return barrier(self.t, self.loss)

    @property
    def accuracy_barrier(self) -> float:
        """The largest drop of accuracy below the straight line between the endpoint accuracies."""
        return barrier(self.t, -self.accuracy)

    def __repr__(self) -> str:
        return (f"Path({self.kind}, {len(self.t)} points, loss barrier {self.loss_barrier:.3f}, "
                f"accuracy barrier {self.accuracy_barrier:.3f})")


def barrier(t: torch.Tensor, values: torch.Tensor) -> float:
    """max_t [v(t) − ((1 − t) v(t_0) + t v(t_1))] for values on increasing points t (t_0 = 0, t_1 = 1)."""
    line = (1 - t) * values[0] + t * values[-1]
    return float((values - line).max())


def linear_path(model: nn.Module, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                x: torch.Tensor, y: torch.Tensor, points: int = 21, keys: Sequence[str] | None = None) -> Path:
    """Loss and accuracy of ``model``'s architecture along (1 − t) θ_A + t θ_B, for ``points`` values of t
    in [0, 1], on data x [N, ...], y [N] (all points in one vmapped pass). ``model`` is unchanged."""
    t = torch.linspace(0, 1, points)
    params = path_states(state_a, state_b, t, keys if keys is not None else merge_keys([state_a, state_b]))
    loss, acc = functional_eval(model, params, x, y)
    return Path(t, loss.cpu(), acc.cpu(), "linear")


def bezier_point(state_a: Mapping[str, torch.Tensor], control: Mapping[str, torch.Tensor],
                 state_b: Mapping[str, torch.Tensor], t: float) -> StateDict:
    """θ(t) = (1 − t)² θ_A + 2 t (1 − t) θ_C + t² θ_B on the control point's keys."""
    return {k: (1 - t) ** 2 * state_a[k] + 2 * t * (1 - t) * control[k] + t ** 2 * state_b[k] for k in control}


def bezier_states(state_a: Mapping[str, torch.Tensor], control: Mapping[str, torch.Tensor],
                  state_b: Mapping[str, torch.Tensor], t: torch.Tensor) -> StateDict:
    """The curve at every t [m], stacked: key -> [m, *shape] (differentiable in ``control``)."""
    out = {}
    for k in control:
        tt = t.to(control[k].device, control[k].dtype).reshape(-1, *([1] * control[k].dim()))
        out[k] = (1 - tt) ** 2 * state_a[k] + 2 * tt * (1 - tt) * control[k] + tt ** 2 * state_b[k]
    return out


@dataclass
class BezierCurve:
    """A trained quadratic Bezier curve: endpoints, control point θ_C, training losses and time."""

    state_a: StateDict
    control: StateDict
    state_b: StateDict
    losses: torch.Tensor
    seconds: float

    def point(self, t: float) -> StateDict:
        return bezier_point(self.state_a, self.control, self.state_b, t)

    def path(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, points: int = 21) -> Path:
        """Loss and accuracy along the curve (vmapped over the points)."""
        t = torch.linspace(0, 1, points)
        loss, acc = functional_eval(model, bezier_states(self.state_a, self.control, self.state_b, t), x, y)
        return Path(t, loss.cpu(), acc.cpu(), "bezier")


def bezier_curve(model: nn.Module, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, steps: int = 300, lr: float = 1e-2, batch_size: int = 128,
                 t_per_step: int = 4, weight_decay: float = 0.0, seed: int = 0,
                 keys: Sequence[str] | None = None) -> BezierCurve:
    """Train the control point θ_C (initialised at the midpoint) by Adam on E_t L(θ(t)) with
    ``t_per_step`` values t ~ U(0, 1) and a mini-batch of (x, y) per step. ``model`` is unchanged."""
    from torch.func import functional_call, vmap

    start = time.perf_counter()
    keys = list(keys) if keys is not None else merge_keys([state_a, state_b])
    a = {k: state_a[k].detach() for k in keys}
    b = {k: state_b[k].detach() for k in keys}
    control = {k: (0.5 * (a[k] + b[k])).clone().requires_grad_(True) for k in keys}
    opt = torch.optim.Adam(control.values(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(int(seed))

    def loss_at(params: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, params, (xb,)), yb)

    losses = []
    with evaluating(model):
        for _ in range(steps):
            t = torch.rand(t_per_step, generator=gen)
            rows = torch.randint(len(y), (min(batch_size, len(y)),), generator=gen).to(y.device)
            params = bezier_states(a, control, b, t)                              # key -> [m, *shape]
            loss = vmap(loss_at, in_dims=(0, None, None))(params, x[rows], y[rows]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    full_a = {k: v.clone() for k, v in state_a.items()}
    full_b = {k: v.clone() for k, v in state_b.items()}
    return BezierCurve(full_a, {k: v.detach() for k, v in control.items()}, full_b,
                       torch.stack(losses).cpu() if losses else torch.empty(0), time.perf_counter() - start)
