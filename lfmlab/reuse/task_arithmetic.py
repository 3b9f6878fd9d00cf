"""Task arithmetic (Ilharco et al., "Editing models with task arithmetic", ICLR 2023; survey eq. 11).

A task vector is what fine-tuning did to the weights, τ_i = W_ft^(i) − W_pre. Adding task
vectors to the pretrained weights, W_new = W_pre + Σ_i λ_i τ_i, builds a multi-task model;
subtracting one (λ < 0, *negation*) makes the model forget that task while leaving unrelated
tasks nearly unchanged. With λ_i = 1/n, addition is exactly the uniform average of the n
fine-tuned models. λ is chosen on held-out data; the accuracy over λ is an inverted U: too small
and the task vectors do not act, too large and they overshoot and interfere.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch

from lfmlab import validate
from lfmlab.core.state import Merged, StateDict, merge_keys, task_vector

__all__ = ["task_vectors", "task_arithmetic", "negation", "sweep_states"]


def task_vectors(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
                 keys: Sequence[str] | None = None) -> list[StateDict]:
    """τ_i = W_ft^(i) − W_pre for each fine-tuned state dict (on ``keys``, default all mergeable)."""
    keys = keys if keys is not None else merge_keys([pretrained, *finetuned])
    return [task_vector(ft, pretrained, keys) for ft in finetuned]


def task_arithmetic(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
                    lam: float | Sequence[float] = 0.3, keys: Sequence[str] | None = None) -> Merged:
    """Eq. 11: W_new = W_pre + Σ_i λ_i τ_i. ``lam``: one λ for all task vectors, or one per vector.

    Entries not in ``keys`` (e.g. task heads) are copied from ``pretrained``.
    """
    start = time.perf_counter()
    keys = keys if keys is not None else merge_keys([pretrained, *finetuned])
    validate.items("finetuned", finetuned, fix="Give at least one fine-tuned state dict.")
    lams = torch.as_tensor([validate.number("λ", lam)] * len(finetuned) if isinstance(lam, (int, float))
                           else validate.numbers("λ", lam), dtype=torch.float64)
    if lams.shape != (len(finetuned),):
        raise ValueError(f"need one λ or {len(finetuned)} of them, got {lam}")
    out = {k: v.clone() for k, v in pretrained.items()}
    for k in keys:
        taus = torch.stack([ft[k] - pretrained[k] for ft in finetuned])        # [n, *shape]
        w = lams.to(taus.device, taus.dtype).reshape(-1, *([1] * (taus.dim() - 1)))
        out[k] = pretrained[k] + (w * taus).sum(0)
    hyper = {"lam": float(lams[0]) if bool((lams == lams[0]).all()) else [float(v) for v in lams]}
    return Merged(out, "task arithmetic", hyper, time.perf_counter() - start)


def negation(pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], lam: float = 1.0,
             keys: Sequence[str] | None = None) -> Merged:
    """Forgetting by negation: W_new = W_pre − λ τ (eq. 11 with a negative coefficient)."""
    merged = task_arithmetic(pretrained, [finetuned], [-float(lam)], keys)
    merged.method, merged.hyper = "task negation", {"lam": float(lam)}
    return merged


def sweep_states(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
                 lams: torch.Tensor, keys: Sequence[str] | None = None) -> StateDict:
    """W_pre + λ Σ_i τ_i for every λ in ``lams`` [m], stacked key -> [m, *shape] (to evaluate with vmap)."""
    keys = keys if keys is not None else merge_keys([pretrained, *finetuned])
    validate.finite("λ values", lams)
    out = {}
    for k in keys:
        tau_sum = sum(ft[k] - pretrained[k] for ft in finetuned)
        lam = lams.to(tau_sum.device, tau_sum.dtype).reshape(-1, *([1] * tau_sum.dim()))
        out[k] = pretrained[k] + lam * tau_sum                               # [m, *shape]
    return out
