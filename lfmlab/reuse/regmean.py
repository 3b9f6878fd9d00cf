"""RegMean: merging by regression (Jin et al., "Dataless knowledge fusion by merging weights of
language models", ICLR 2023; survey §4.2.3, "closed-form solutions").

For a linear layer with input X_i (the activations model i feeds it on its own data) and weight
W_i, RegMean asks for the single weight W that reproduces every model's outputs:

    min_W  Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖²   ⇒   Wᵀ = (Σ_i G_i)⁻¹ Σ_i G_i W_iᵀ,   G_i = X_iᵀ X_i.

Only the Gram matrices G_i [d_in, d_in] are shared, never the data. To keep the merge closer to a
plain average, the off-diagonal entries of each G_i are scaled by α (the paper's
``reduce_non_diagonal_ratio``): G̃_i = α G_i + (1 − α) diag(G_i); α = 1 is the exact regression.
Weights of non-linear layers and biases are averaged. G_i is the *mean* XᵀX over model i's
examples (as in FusionBench), so every model counts equally whatever its data size.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.hooks import capture
from lfmlab.core.params import evaluating
from lfmlab.core.state import Merged, merge_keys

__all__ = ["gram_matrices", "regmean"]


def gram_matrices(model: nn.Module, x: torch.Tensor, modules: Sequence[str] | None = None,
                  batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """module name -> G = mean over inputs of x xᵀ [d_in, d_in], for the inputs of each ``nn.Linear``
    in ``modules`` (default: every Linear of ``model``), on data x [N, ...]. The model is unchanged."""
    names = list(modules) if modules is not None else [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    grams: dict[str, torch.Tensor] = {}
    count = 0
    with evaluating(model):
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                with capture(model, names, inputs=True) as seen:
                    model(x[i:i + batch_size])
                for n in names:
                    a = seen[n].reshape(-1, seen[n].shape[-1])                  # [B(·T), d_in]
                    grams[n] = grams.get(n, 0) + a.T @ a
                count += seen[names[0]].reshape(-1, seen[names[0]].shape[-1]).shape[0]
    return {n: g / count for n, g in grams.items()}


def regmean(states: Sequence[Mapping[str, torch.Tensor]], grams: Sequence[Mapping[str, torch.Tensor]],
            alpha: float = 0.9, keys: Sequence[str] | None = None, ridge: float = 1e-8) -> Merged:
    """RegMean over ``states`` with one Gram dict per model (from :func:`gram_matrices`).

    A key ``"<module>.weight"`` whose module has a Gram matrix is merged in closed form; every
    other key in ``keys`` (default: all mergeable) is averaged. ``ridge`` × mean(diag) is added
    to Σ G̃_i so that units no model ever activates do not make it singular.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha scales the off-diagonal Gram entries, in [0, 1]; got {alpha}")
    start = time.perf_counter()
    keys = list(keys) if keys is not None else merge_keys(states)
    out = {k: v.clone() for k, v in states[0].items()}
    solved = []
    for k in keys:
        module = k[:-len(".weight")] if k.endswith(".weight") else None
        if module is not None and module in grams[0] and states[0][k].dim() == 2:
            lhs, rhs = 0, 0
            for s, g in zip(states, grams):
                g = g[module].to(s[k].dtype)
                g = alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))    # G̃_i
                lhs = lhs + g                                                # Σ G̃_i      [d_in, d_in]
                rhs = rhs + g @ s[k].T                                       # Σ G̃_i W_iᵀ [d_in, d_out]
            lhs = lhs + ridge * torch.diagonal(lhs).mean() * torch.eye(lhs.shape[0], dtype=lhs.dtype, device=lhs.device)
            out[k] = torch.linalg.solve(lhs, rhs).T                           # [d_out, d_in]
            solved.append(module)
        else:
            out[k] = torch.stack([s[k] for s in states]).mean(0)
    return Merged(out, "RegMean", {"alpha": alpha}, time.perf_counter() - start, {"regression": solved})
