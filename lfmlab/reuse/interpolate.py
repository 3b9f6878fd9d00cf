"""Linear weight interpolation and weighted averaging (survey §4.2.1, eqs. 9-10).

Eq. 9 walks the straight line between two models, W(λ) = λ W_1 + (1 − λ) W_2, which lfmlab writes
with t = 1 − λ in one direction everywhere: (1 − t) W_a + t W_b, model a at t = 0; eq. 10 takes any
weighted combination of n models, W = Σ_i λ_i W_i. *Weighted averaging* is eq. 10 with
λ_i ≥ 0 and Σ_i λ_i = 1; the *uniform average* (a "model soup", Wortsman et al. 2022) has
λ_i = 1/n. These are cheap and exact, but only make sense when the models share a loss basin
(fine-tuned from one pretrained model, or aligned by re-basin first: see :mod:`rebasin`).
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch

from lfmlab import validate
from lfmlab.core.state import Merged, StateDict, combine, interpolate, merge_keys

__all__ = ["lerp", "weighted_average", "uniform_average", "path_states"]


def lerp(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], t: float,
         keys: Sequence[str] | None = None) -> StateDict:
    """(1 − t) W_a + t W_b: W_a at t = 0, W_b at t = 1 (eq. 9 with λ = 1 − t; the one direction of
    every interpolation in lfmlab, :func:`lfmlab.core.state.interpolate`)."""
    t = validate.number("t", t, fix="t = 0 gives W_a, t = 1 gives W_b.")
    keys = keys if keys is not None else merge_keys([w_a, w_b])
    return interpolate(w_a, w_b, t, keys)


def path_states(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], ts: torch.Tensor,
                keys: Sequence[str] | None = None) -> StateDict:
    """The points (1 − t) W_a + t W_b for every t in ``ts`` [m], stacked: key -> [m, *shape].

    (Note the direction: t runs from model a at t = 0 to model b at t = 1.)
    """
    keys = keys if keys is not None else merge_keys([w_a, w_b])
    validate.finite("the path's points t", ts)
    out = {}
    for k in keys:
        t = ts.to(w_a[k].device, w_a[k].dtype).reshape(-1, *([1] * w_a[k].dim()))
        out[k] = (1 - t) * w_a[k] + t * w_b[k]                                # [m, *shape]
    return out


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float],
                     keys: Sequence[str] | None = None) -> Merged:
    """Eq. 10 with λ_i ≥ 0, Σ λ_i = 1 (the weights are normalised here; negative ones are refused)."""
    start = time.perf_counter()
    w = torch.as_tensor(
        validate.numbers("weights", weights, 0.0, fix="Give non-negative weights with a positive sum."),
        dtype=torch.float64,
    )
    if len(w) != len(states) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"need {len(states)} non-negative weights with a positive sum, got {list(weights)}")
    w = w / w.sum()
    state = combine(states, w, keys)
    return Merged(state, "weighted average", {"weights": [round(float(v), 4) for v in w]},
                  time.perf_counter() - start)


def uniform_average(states: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str] | None = None) -> Merged:
    """The uniform soup: λ_i = 1/n for every model."""
    merged = weighted_average(states, [1.0] * len(states), keys)
    merged.method, merged.hyper = "uniform average", {"n": len(states)}
    return merged
