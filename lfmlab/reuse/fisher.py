"""Fisher merging (Matena & Raffel, "Merging models with Fisher-weighted averaging", NeurIPS 2022; survey §4.2.3).

Averaging treats every weight of every model as equally trustworthy. Fisher merging weighs each
weight by how much its model's predictions depend on it, measured by the diagonal of the Fisher
information F_i = E_x E_{y ~ p_i(y|x)} [(∂ log p_i(y|x) / ∂θ)²]. The merge is the per-entry
weighted mean

    θ* = Σ_i λ_i F_i ⊙ θ_i / Σ_i λ_i F_i,

the maximiser of a sum of Laplace (diagonal Gaussian) approximations of the models' posteriors.
With equal Fishers it reduces to the average. Here the expectation over y is exact: every class
is weighted by its predicted probability (no sampling), which is cheap for a few classes.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.params import evaluating
from lfmlab.core.state import Merged, StateDict, merge_keys

__all__ = ["diagonal_fisher", "fisher_merging"]


def diagonal_fisher(model: nn.Module, x: torch.Tensor, keys: Sequence[str] | None = None,
                    y: torch.Tensor | None = None, batch_size: int = 64) -> StateDict:
    """The diagonal Fisher of ``model``'s parameters ``keys`` over inputs x [N, ...].

    Without ``y``: the true Fisher, Σ_c p(c|x) (∂ log p(c|x)/∂θ)², averaged over x.
    With labels ``y`` [N]: the empirical Fisher, (∂ log p(y|x)/∂θ)². Per-example gradients come
    from ``torch.func`` (``vmap`` over examples, ``jacrev`` over classes). The model is unchanged.
    """
    from torch.func import functional_call, jacrev, vmap

    named = dict(model.named_parameters())
    keys = list(keys) if keys is not None else list(named)
    params = {k: named[k].detach() for k in keys}
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}

    def log_probs(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(functional_call(model, p, (xi.unsqueeze(0),))[0], -1)   # [C]

    with evaluating(model):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            with torch.no_grad():
                lp = vmap(log_probs, in_dims=(None, 0))(params, xb)                     # [B, C]
            if y is None:
                jac = vmap(jacrev(log_probs), in_dims=(None, 0))(params, xb)           # key -> [B, C, *shape]
                w = lp.exp()                                                        # [B, C]
                for k in keys:
                    ww = w.reshape(*w.shape, *([1] * (jac[k].dim() - 2)))
                    fisher[k] += (ww * jac[k].pow(2)).sum((0, 1))
            else:
                onehot = nn.functional.one_hot(y[i:i + batch_size], lp.shape[-1]).to(lp.dtype)   # [B, C]

                def picked(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
                    return (log_probs(p, xi) * yi).sum()                            # log p(y|x)

                grads = vmap(torch.func.grad(picked), in_dims=(None, 0, 0))(params, xb, onehot)  # key -> [B, *shape]
                for k in keys:
                    fisher[k] += grads[k].pow(2).sum(0)
    return {k: v / len(x) for k, v in fisher.items()}


def fisher_merging(states: Sequence[Mapping[str, torch.Tensor]], fishers: Sequence[Mapping[str, torch.Tensor]],
                   lams: Sequence[float] | None = None, keys: Sequence[str] | None = None,
                   eps: float = 1e-8, normalize: bool = False) -> Merged:
    """θ* = Σ_i λ_i F_i θ_i / Σ_i λ_i F_i on ``keys`` (default: the keys of ``fishers[0]``).

    ``eps`` is added to every Fisher entry, so that a weight no model cares about becomes the plain
    average. ``normalize`` divides each model's Fisher by its global L2 norm first (FusionBench's
    option). Entries outside ``keys`` are copied from ``states[0]``.
    """
    start = time.perf_counter()
    keys = list(keys) if keys is not None else [k for k in fishers[0] if k in merge_keys(states)]
    lam = torch.ones(len(states), dtype=torch.float64) if lams is None else torch.as_tensor(lams, dtype=torch.float64)
    if normalize:
        norms = torch.stack([torch.sqrt(sum(f[k].double().pow(2).sum() for k in keys)) for f in fishers])
        lam = lam / norms.cpu()
    out = {k: v.clone() for k, v in states[0].items()}
    for k in keys:
        theta = torch.stack([s[k] for s in states])                         # [n, *shape]
        f = torch.stack([fi[k] for fi in fishers]) + eps                     # [n, *shape]
        w = lam.to(f.device, f.dtype).reshape(-1, *([1] * (f.dim() - 1))) * f
        out[k] = (w * theta).sum(0) / w.sum(0)
    return Merged(out, "Fisher", {"eps": eps, "normalize": normalize}, time.perf_counter() - start)
