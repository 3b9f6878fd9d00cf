"""SLERP: spherical linear interpolation of two models, tensor by tensor (Shoemake, "Animating
rotation with quaternion curves", SIGGRAPH 1985; as mergekit's ``slerp`` merge applies it to
weights, Goddard et al., "Arcee's MergeKit", EMNLP 2024 industry track; survey §4.2.1).

Linear interpolation (eq. 9) walks the chord between two weight tensors. When they point in
different directions, the chord passes close to the origin: at the midpoint the norm shrinks by
cos(Ω/2), where Ω is the angle between them. SLERP walks the arc instead. For each tensor, with
v_a, v_b flattened and Ω = arccos(⟨v_a, v_b⟩ / (‖v_a‖ ‖v_b‖)),

$$\\mathrm{slerp}(v_a, v_b; t) = \\frac{\\sin((1-t)\\,Ω)}{\\sin Ω}\\, v_a + \\frac{\\sin(t\\,Ω)}{\\sin Ω}\\, v_b,$$

model a at t = 0, model b at t = 1 (the same direction as :func:`lfmlab.reuse.interpolate.lerp`).
When ‖v_a‖ = ‖v_b‖ the norm stays constant along the path; in general it moves smoothly
between the two.

As in mergekit:

* the angle comes from the normalised tensors, the coefficients are applied to the raw ones;
* when the two directions are nearly parallel (|cos Ω| > ``dot_threshold``, 0.9995) sin Ω is
  numerically zero and SLERP *is* the chord, so it falls back to linear interpolation. Two
  fine-tunes of one pretrained model usually land here: their cosine is > 0.9995 in most
  tensors, and SLERP then changes nothing. ``info["fallback"]`` counts those tensors.

Simplifications: one t for every tensor (mergekit can vary t by layer and by parameter name);
only two models (SLERP is defined for a pair).
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab import validate
from lfmlab.core.state import Merged, StateDict, functional_eval, merge_keys

__all__ = ["slerp_tensor", "slerp", "path_states", "path", "angles", "norm_ratio"]

DOT_THRESHOLD = 0.9995


def _cos(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(eps))


def slerp_tensor(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = DOT_THRESHOLD
                 ) -> tuple[torch.Tensor, bool]:
    """One tensor: slerp(a, b; t) and whether it fell back to linear interpolation."""
    dot = _cos(a, b)
    if abs(dot) > dot_threshold or float(a.norm()) == 0.0 or float(b.norm()) == 0.0:
        return (1 - t) * a + t * b, True
    omega = math.acos(max(-1.0, min(1.0, dot)))
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s) * a + (math.sin(t * omega) / s) * b, False


def slerp(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], t: float = 0.5,
          keys: Sequence[str] | None = None, dot_threshold: float = DOT_THRESHOLD) -> Merged:
    """SLERP of two state dicts, tensor by tensor, at t (0 = model a, 1 = model b).

    Entries not in ``keys`` (default: every floating-point key the two share) are copied from
    ``w_a``. ``info``: ``fallback`` (the tensors that were too parallel for SLERP and were
    interpolated linearly), ``tensors`` (how many were merged), ``mean angle`` (degrees).
    """
    start = time.perf_counter()
    t = validate.number("t", t, 0.0, 1.0, fix="t = 0 gives model a, t = 1 gives model b, e.g. 0.5.")
    dot_threshold = validate.number("dot_threshold", dot_threshold, 0.0, 1.0, fix="mergekit uses 0.9995.")
    keys = list(keys) if keys is not None else merge_keys([w_a, w_b])
    validate.items("keys", keys, fix="The two models share no floating-point tensors to interpolate.")
    missing = [k for k in keys if k not in w_a or k not in w_b or w_a[k].shape != w_b[k].shape]
    if missing:
        raise ValueError(f"the two models differ in {missing[:3]}: SLERP needs tensors of the same shapes")
    out = {k: v.clone() for k, v in w_a.items()}
    fallback = 0
    for k in keys:
        out[k], fell = slerp_tensor(w_a[k], w_b[k], t, dot_threshold)
        fallback += fell
    info = {"fallback": fallback, "tensors": len(keys),
            "mean angle": float(sum(angles(w_a, w_b, keys).values()) / len(keys))}
    return Merged(out, "SLERP", {"t": t, "dot_threshold": dot_threshold}, time.perf_counter() - start, info)


def angles(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor],
           keys: Sequence[str] | None = None) -> dict[str, float]:
    """The angle Ω between the two models' tensors, in degrees, key by key."""
    keys = keys if keys is not None else merge_keys([w_a, w_b])
    return {k: math.degrees(math.acos(max(-1.0, min(1.0, _cos(w_a[k], w_b[k]))))) for k in keys}


def path_states(w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], ts: torch.Tensor,
                keys: Sequence[str] | None = None, dot_threshold: float = DOT_THRESHOLD) -> StateDict:
    """SLERP at every t in ``ts`` [m], stacked: key -> [m, *shape] (as :func:`interpolate.path_states`)."""
    validate.finite("the path's points t", ts)
    keys = keys if keys is not None else merge_keys([w_a, w_b])
    points = [slerp(w_a, w_b, float(t), keys, dot_threshold).state for t in ts]
    return {k: torch.stack([p[k] for p in points]) for k in keys}


def path(model: nn.Module, w_a: Mapping[str, torch.Tensor], w_b: Mapping[str, torch.Tensor], x: torch.Tensor,
         y: torch.Tensor, points: int = 21, keys: Sequence[str] | None = None):
    """Loss and accuracy along the SLERP path (a :class:`lfmlab.reuse.connectivity.Path` of kind
    ``"SLERP"``, to compare with :func:`lfmlab.reuse.connectivity.linear_path`). ``model`` is unchanged."""
    from lfmlab.reuse.connectivity import Path

    t = torch.linspace(0, 1, points)
    loss, acc = functional_eval(model, path_states(w_a, w_b, t, keys), x, y)
    return Path(t, loss.cpu(), acc.cpu(), "SLERP")


def norm_ratio(points: Mapping[str, torch.Tensor], w_a: Mapping[str, torch.Tensor],
               w_b: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """For stacked points (key -> [m, *shape]): each point's tensor norm divided by the endpoints'
    interpolated norm (1 − t)‖a‖ + t‖b‖, averaged over the keys -> [m] on the CPU (1 = no shrinkage),
    ready to plot wherever the points live."""
    keys = list(points)
    m = points[keys[0]].shape[0]
    t = torch.linspace(0, 1, m, dtype=torch.float64)
    ratios = []
    for k in keys:
        ends = (1 - t) * w_a[k].double().norm().cpu() + t * w_b[k].double().norm().cpu()
        ratios.append(points[k].double().flatten(1).norm(dim=1).cpu() / ends.clamp_min(1e-12))
    return torch.stack(ratios).mean(0)
