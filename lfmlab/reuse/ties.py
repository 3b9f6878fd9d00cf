"""TIES-merging (Yadav et al., "Resolving interference when merging models", NeurIPS 2023; survey §4.2.1).

Averaging task vectors lets them interfere in two ways: many small, redundant changes dilute
the important ones, and tasks that push a weight in opposite directions cancel out. TIES fixes
both in three steps, applied to the task vectors τ_1..τ_n:

1. **Trim**: keep the top-k% entries of each τ_i by magnitude (``density`` = k/100), zero the rest.
2. **Elect sign**: for every entry, γ = sgn(Σ_i τ̂_i), the sign with the larger total mass.
3. **Disjoint merge**: average only the entries that agree with γ:
   τ_m = Σ_{i ∈ A} τ̂_i / |A|, with A = {i : sgn(τ̂_i) = γ, τ̂_i ≠ 0}.

The merged model is W_pre + λ τ_m. The paper trims over all of a model's parameters at once
(``scope="global"``); peft's ``merge_utils.ties`` trims each tensor on its own (``scope="tensor"``).
"""
from __future__ import annotations

import time
from typing import Literal, Mapping, Sequence

import torch

from lfmlab.core.state import Merged, flatten, merge_keys, unflatten

__all__ = ["trim", "elect_sign", "disjoint_mean", "ties_merging"]


def trim(taus: torch.Tensor, density: float) -> torch.Tensor:
    """Step 1: keep the ``k = int(density * P)`` largest-magnitude entries of each row of taus [n, P]."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density is the share of entries kept, in (0, 1]; got {density}")
    if density >= 1.0:
        return taus.clone()
    k = int(density * taus.shape[1])
    if k == 0:
        return torch.zeros_like(taus)
    top = taus.abs().topk(k, dim=1).indices                                  # [n, k]
    mask = torch.zeros_like(taus, dtype=torch.bool).scatter_(1, top, True)
    return taus * mask


def elect_sign(trimmed: torch.Tensor) -> torch.Tensor:
    """Step 2: γ = sgn(Σ_i τ̂_i) per entry, [n, P] -> [P] in {-1, +1} (a zero sum counts as +1)."""
    return torch.where(trimmed.sum(0) >= 0, 1.0, -1.0).to(trimmed.dtype)


def disjoint_mean(trimmed: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Step 3: the mean of the entries that agree with γ (zeros excluded), [n, P] -> [P]."""
    agree = (torch.sign(trimmed) == sign).to(trimmed.dtype)                 # [n, P]; a zero never agrees
    return (trimmed * agree).sum(0) / agree.sum(0).clamp_min(1.0)


def ties_merging(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
                 density: float = 0.2, lam: float = 1.0, scope: Literal["global", "tensor"] = "global",
                 keys: Sequence[str] | None = None) -> Merged:
    """TIES-merging of ``finetuned`` onto ``pretrained``: W_pre + λ · disjoint_mean(elect(trim(τ))).

    ``scope``: trim over all ``keys`` at once (the paper) or per tensor (peft). Entries not in
    ``keys`` are copied from ``pretrained``. ``info["kept"]``: the share of trimmed task-vector
    entries that agree with the elected sign (the rest are discarded as interference).
    """
    from lfmlab import validate

    validate.items("finetuned", finetuned, fix="Give at least one fine-tuned state dict.")
    density = validate.number("density", density, 0.0, 1.0, lo_open=True, fix="The share of each τ kept, e.g. 0.2.")
    lam = validate.number("λ", lam, fix="λ scales the merged task vector, e.g. 1.0.")
    start = time.perf_counter()
    keys = list(keys) if keys is not None else merge_keys([pretrained, *finetuned])
    groups = [keys] if scope == "global" else [[k] for k in keys] if scope == "tensor" else None
    if groups is None:
        raise ValueError(f"scope must be 'global' or 'tensor', got {scope!r}")
    out = {k: v.clone() for k, v in pretrained.items()}
    agree_n, nonzero_n = 0.0, 0.0
    for group in groups:
        taus = torch.stack([flatten(ft, group) - flatten(pretrained, group) for ft in finetuned])  # [n, P]
        trimmed = trim(taus, density)
        sign = elect_sign(trimmed)
        merged = disjoint_mean(trimmed, sign)                                # [P]
        agree_n += float((torch.sign(trimmed) == sign).sum())
        nonzero_n += float((trimmed != 0).sum())
        for k, v in unflatten(merged, pretrained, group).items():
            out[k] = pretrained[k] + lam * v
    info = {"kept": agree_n / max(nonzero_n, 1.0)}
    return Merged(out, "TIES", {"density": density, "lam": lam, "scope": scope}, time.perf_counter() - start, info)
