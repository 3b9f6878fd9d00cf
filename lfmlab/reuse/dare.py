"""DARE: Drop And REscale (Yu et al., "Language models are Super Mario", ICML 2024).

Fine-tuning deltas are highly redundant: DARE drops each entry of a task vector with
probability 1 − p and rescales the survivors by 1/p, τ̃ = (m ⊙ τ) / p with m ~ Bernoulli(p),
so that E[τ̃] = τ. The sparse vectors interfere less; they are then merged by task arithmetic
(``merge="sum"``: W_pre + λ Σ_i τ̃_i) or by TIES' sign election and disjoint mean (``merge="ties"``).
p is called ``density`` here, as in peft.
"""
from __future__ import annotations

import time
from typing import Literal, Mapping, Sequence

import torch

from lfmlab.core.state import Merged, merge_keys
from lfmlab.reuse.ties import disjoint_mean, elect_sign

__all__ = ["drop_and_rescale", "dare"]


def drop_and_rescale(tau: torch.Tensor, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """τ̃ = m ⊙ τ / p with m ~ Bernoulli(p) per entry (p = ``density``)."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density is the keep probability, in (0, 1]; got {density}")
    if density >= 1.0:
        return tau.clone()
    mask = torch.bernoulli(torch.full_like(tau, density), generator=generator)
    return tau * mask / density


def dare(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
         density: float = 0.3, lam: float = 0.3, merge: Literal["sum", "ties"] = "sum", seed: int = 0,
         keys: Sequence[str] | None = None) -> Merged:
    """DARE, then merge. Masks are drawn key by key, then task by task, from a generator seeded with ``seed``.

    ``merge="sum"``: W_pre + λ Σ_i τ̃_i (peft's ``dare_linear`` with weights λ);
    ``merge="ties"``: W_pre + λ · disjoint_mean(τ̃) under the elected sign (peft's ``dare_ties``).
    """
    from lfmlab import validate

    if merge not in ("sum", "ties"):
        raise ValueError(f"merge must be 'sum' or 'ties', got {merge!r}")
    validate.items("finetuned", finetuned, fix="Give at least one fine-tuned state dict.")
    density = validate.number("density", density, 0.0, 1.0, lo_open=True, fix="The share of each τ kept, e.g. 0.3.")
    lam = validate.number("λ", lam, fix="λ scales the merged task vectors, e.g. 0.3.")
    start = time.perf_counter()
    keys = keys if keys is not None else merge_keys([pretrained, *finetuned])
    gen = torch.Generator(device=pretrained[keys[0]].device).manual_seed(int(seed))
    out = {k: v.clone() for k, v in pretrained.items()}
    for k in keys:
        sparse = torch.stack([drop_and_rescale(ft[k] - pretrained[k], density, gen) for ft in finetuned])  # [n, *shape]
        if merge == "sum":
            delta = sparse.sum(0)
        else:
            flat = sparse.reshape(len(finetuned), -1)
            delta = disjoint_mean(flat, elect_sign(flat)).reshape(pretrained[k].shape)
        out[k] = pretrained[k] + lam * delta
    return Merged(out, f"DARE-{merge}", {"density": density, "lam": lam, "seed": seed}, time.perf_counter() - start)
