"""Model stock (Jang, Yun & Han, "Model Stock: All we need is just a few fine-tuned models",
ECCV 2024; survey §4.2.1, weight averaging).

A uniform soup needs many fine-tuned ingredients to land near the centre of their basin. Model
stock needs two. Its observation: fine-tuned weights of one pretrained model w_0 lie on a thin
shell around a centre μ, and the angle θ between any two of them *seen from w_0* is about the
same. From that geometry, the point of the plane through w_0 and the k models closest to μ is

$$w_H = t\\,\\bar w_k + (1 - t)\\,w_0, \\qquad t = \\frac{k\\cos θ}{1 + (k - 1)\\cos θ}$$

(eq. 8 of the paper), where \\bar w_k is the average of the k fine-tuned weights and
cos θ = ⟨w_i − w_0, w_j − w_0⟩ / (‖w_i − w_0‖ ‖w_j − w_0‖), computed **per layer** (per weight
tensor), averaged over the pairs i < j. Nearly orthogonal fine-tunes (cos θ → 0) pull w_H back
towards the pretrained weights; agreeing ones (cos θ → 1) give the plain average. No data and
no hyper-parameter.

Simplifications: the paper also merges *during* training (model stock at every epoch); here only
the post-training merge. The ratio is computed for every floating-point tensor, biases included
(a tensor whose task vectors are all zero keeps w_0).
"""
from __future__ import annotations

import itertools
import time
from typing import Mapping, Sequence

import torch

from lfmlab import validate
from lfmlab.core.state import Merged, merge_keys

__all__ = ["cosine", "ratio", "model_stock"]


def cosine(deltas: Sequence[torch.Tensor], eps: float = 1e-12) -> float:
    """The mean cos θ over the pairs of task vectors (each flattened), in [-1, 1]."""
    flat = [d.double().flatten() for d in deltas]
    cos = [float(a @ b / (a.norm() * b.norm()).clamp_min(eps)) for a, b in itertools.combinations(flat, 2)]
    return sum(cos) / len(cos)


def ratio(cos_theta: float, k: int) -> float:
    """t = k cos θ / (1 + (k − 1) cos θ), the weight of the average against w_0 (eq. 8)."""
    return k * cos_theta / (1 + (k - 1) * cos_theta)


def model_stock(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
                keys: Sequence[str] | None = None) -> Merged:
    """w_H = t \\bar w_k + (1 − t) w_0 per tensor, t from the tensor's angle between the fine-tunes.

    ``finetuned``: k ≥ 2 state dicts fine-tuned from ``pretrained``. Entries not in ``keys``
    (default: every floating-point key they share) are copied from ``pretrained``.
    ``info``: ``ratio`` and ``cos`` per key. A negative mean cosine (fine-tunes that disagree)
    gives t ≤ 0 and is clipped to 0: w_0 is kept.
    """
    start = time.perf_counter()
    validate.items("finetuned", finetuned, fix="Give the state dicts of at least two fine-tuned models.")
    k = len(finetuned)
    if k < 2:
        raise ValueError(f"model stock needs at least two fine-tuned models (it measures the angle between "
                         f"them), got {k}; with one, use it as it is")
    keys = list(keys) if keys is not None else merge_keys([pretrained, *finetuned])
    out = {key: v.clone() for key, v in pretrained.items()}
    ratios, coss = {}, {}
    for key in keys:
        deltas = [ft[key] - pretrained[key] for ft in finetuned]
        if all(float(d.abs().max()) == 0.0 for d in deltas):
            ratios[key], coss[key] = 0.0, 1.0
            continue
        coss[key] = c = cosine(deltas)
        ratios[key] = t = max(0.0, ratio(c, k)) if c > 0 else 0.0
        out[key] = pretrained[key] + t * torch.stack(deltas).mean(0)
    mean_t = sum(ratios.values()) / max(len(ratios), 1)
    return Merged(out, "model stock", {"k": k}, time.perf_counter() - start,
                  {"ratio": ratios, "cos": coss, "mean ratio": mean_t})
