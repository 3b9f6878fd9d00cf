"""OT fusion: model fusion via optimal transport (Singh & Jaggi, "Model Fusion via Optimal
Transport", NeurIPS 2020; survey §4.2.3).

Two networks trained from different seeds order their hidden units differently, so averaging
them unit by unit mixes unrelated units (the naive average). OT fusion first *transports* the
units of model B onto those of model A, layer by layer from the input, then averages. For hidden
layer l, with A's n_l units (mass α_j = 1/n_l each) and B's m_l units (mass β_i = 1/m_l):

1. **align the inputs**: B's incoming weights are first expressed in A's order of layer l − 1,
   Ŵ_B^(l) = W_B^(l) T^(l−1) diag(1/α^(l−1)) (the input layer needs nothing);
2. **ground cost** between units: C_ij = ‖Ŵ_B^(l)[i] − W_A^(l)[j]‖² over the incoming weights
   and the bias (*weight-based* fusion), or between the units' activations on data
   (*activation-based*);
3. **transport**: T^(l) = argmin_{T ≥ 0, T 1 = β, Tᵀ 1 = α} ⟨T, C⟩ (eq. 1 of the paper), exactly
   (an assignment when n_l = m_l: the extreme points of that polytope are permutations; a linear
   programme otherwise) or with an entropy term ε H(T) by Sinkhorn's iterations (soft alignment);
4. **average**: W_fused^(l) = ½ (W_A^(l) + diag(1/α^(l)) T^(l)ᵀ Ŵ_B^(l)).

The output layer is never transported (both models share the classes). With exact OT and equal
widths this is one left-to-right pass of weight matching; Git Re-Basin (:mod:`rebasin`) iterates
the same assignments to a fixed point, ZipIt (:mod:`zipit`) also pairs units within one model.

Simplifications: two models of one MLP layout (the paper fuses several models and CNNs); uniform
unit masses (the paper's default); the fused model has A's widths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import torch

from lfmlab import validate
from lfmlab.core.state import StateDict
from lfmlab.reuse.zipit import hidden_features

__all__ = ["exact_transport", "sinkhorn", "otfusion", "Fused"]


def exact_transport(cost: torch.Tensor) -> torch.Tensor:
    """The exact OT plan [m, n] for ``cost`` [m, n] with uniform masses 1/m and 1/n."""
    import numpy as np

    m, n = cost.shape
    c = cost.detach().double().cpu().numpy()
    if m == n:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(c)
        plan = np.zeros((m, n))
        plan[rows, cols] = 1.0 / n
    else:
        from scipy.optimize import linprog

        a_eq = np.concatenate([np.kron(np.eye(m), np.ones((1, n))), np.kron(np.ones((1, m)), np.eye(n))])
        b_eq = np.concatenate([np.full(m, 1.0 / m), np.full(n, 1.0 / n)])
        res = linprog(c.reshape(-1), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        if not res.success:
            raise RuntimeError(f"the transport problem was not solved: {res.message}")
        plan = res.x.reshape(m, n)
    return torch.as_tensor(plan, dtype=cost.dtype, device=cost.device)


def sinkhorn(cost: torch.Tensor, eps: float, iters: int = 500) -> torch.Tensor:
    """Entropic OT plan (Cuturi 2013) in the log domain; ``eps`` is relative to the cost's median."""
    m, n = cost.shape
    c = cost.double() / cost.double().median().clamp_min(1e-12)
    log_a = torch.full((m,), -torch.log(torch.tensor(float(m))), dtype=c.dtype, device=c.device)
    log_b = torch.full((n,), -torch.log(torch.tensor(float(n))), dtype=c.dtype, device=c.device)
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(iters):
        f = eps * (log_a - torch.logsumexp((g[None, :] - c) / eps, dim=1))
        g = eps * (log_b - torch.logsumexp((f[:, None] - c) / eps, dim=0))
    return torch.exp((f[:, None] + g[None, :] - c) / eps).to(cost.dtype)


@dataclass
class Fused:
    """The fused state dict (A's layout), the transport plans per hidden layer, the settings, seconds."""

    state: StateDict
    plans: list[torch.Tensor]
    hyper: dict
    seconds: float


def otfusion(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], layers: Sequence[str],
             solver: Literal["exact", "sinkhorn"] = "exact", eps: float = 0.05, cost: str = "weights",
             x: torch.Tensor | None = None, weight_b: float = 0.5, identity: bool = False) -> Fused:
    """Fuse MLP B into MLP A: linear layers ``layers`` in order (e.g. ``["features.0", "features.2",
    "head"]``), ReLU between them.

    ``solver``: exact OT or Sinkhorn with entropy ``eps`` (relative to the median cost).
    ``cost``: ``"weights"`` (no data) or ``"activations"`` (needs inputs ``x``).
    ``weight_b``: B's share in the average (½ in the paper). ``identity=True`` skips the transport
    (T = diag(β)): the naive average, the method's null.
    """
    start = time.perf_counter()
    solver = validate.choice("solver", solver, ("exact", "sinkhorn"))
    cost = validate.choice("cost", cost, ("weights", "activations"))
    eps = validate.number("ε", eps, 0.0, lo_open=True, fix="A positive entropy, e.g. 0.05 (smaller is sharper).")
    weight_b = validate.number("weight_b", weight_b, 0.0, 1.0, fix="B's share of the average, e.g. 0.5.")
    validate.items("layers", layers, fix='Name the linear layers in order, e.g. ["features.0", "features.2", "head"].')
    if cost == "activations" and x is None:
        raise ValueError("activation-based fusion needs inputs: pass x (e.g. a few hundred train images)")
    for name in layers:
        for p in ("weight", "bias"):
            if f"{name}.{p}" not in state_a or f"{name}.{p}" not in state_b:
                raise KeyError(f"{name}.{p} is missing from one of the models; layers must name linear layers")
    acts = (hidden_features(state_a, layers, x), hidden_features(state_b, layers, x)) if cost == "activations" else None
    out = {k: v.clone() for k, v in state_a.items()}
    plans: list[torch.Tensor] = []
    carry = None                                                   # T^(l-1) diag(1/α^(l-1)) [m_{l-1}, n_{l-1}]
    for i, name in enumerate(layers):
        wa, ba = state_a[f"{name}.weight"], state_a[f"{name}.bias"]
        wb, bb = state_b[f"{name}.weight"], state_b[f"{name}.bias"]
        wb_hat = wb if carry is None else wb @ carry                    # [m_l, n_{l-1}]
        if i == len(layers) - 1:
            aligned_w, aligned_b = wb_hat, bb                           # the classes: no transport
        else:
            m, n = wb_hat.shape[0], wa.shape[0]
            if identity:
                if m != n:
                    raise ValueError("the identity transport needs equal widths")
                plan = torch.eye(n, dtype=wa.dtype, device=wa.device) / n
            else:
                if cost == "weights":
                    fb, fa = torch.cat([wb_hat, bb[:, None]], 1), torch.cat([wa, ba[:, None]], 1)
                else:
                    fb, fa = acts[1][i].T, acts[0][i].T                 # [units, N]
                c = torch.cdist(fb.double(), fa.double()).pow(2)        # [m, n]
                plan = exact_transport(c) if solver == "exact" else sinkhorn(c, eps)
                plan = plan.to(wa.dtype)
            plans.append(plan)
            carry = plan * n                                            # T diag(1/α), α = 1/n
            aligned_w, aligned_b = carry.T @ wb_hat, carry.T @ bb       # [n, n_{l-1}], [n]
        out[f"{name}.weight"] = (1 - weight_b) * wa + weight_b * aligned_w
        out[f"{name}.bias"] = (1 - weight_b) * ba + weight_b * aligned_b
    hyper = {"solver": "identity" if identity else solver, "cost": cost, "weight_b": weight_b}
    if solver == "sinkhorn" and not identity:
        hyper["eps"] = eps
    return Fused(out, plans, hyper, time.perf_counter() - start)
