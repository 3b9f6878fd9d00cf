"""How a tuned weight matrix differs from the pretrained one, seen through singular vectors:
LoRA's "intruder dimensions" (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
Equivalence"; survey §2.1.1 for LoRA and fine-tuning).

For a pretrained matrix W_0 = U_0 Σ_0 V_0ᵀ and its tuned version W = U Σ Vᵀ, each of W's top-k
left singular vectors u_j is compared with every singular vector of W_0:

    sim_j = max_i |cos(u_j, u_{0,i})|.

A direction with sim_j < ε is an **intruder dimension**: a high-ranking direction of the tuned
matrix that the pretrained matrix did not have. Shuttleworth et al. find that LoRA's low-rank
updates introduce such directions while full fine-tuning mostly rotates and rescales existing ones,
even at equal task accuracy. ``similarity`` gives sim_j for j = 1..k, ``intruders`` counts them.

Simplified here: the matrices are world-lm's (tiny, d = 128) after lfmlab's short tuning runs;
the paper uses LLaMA/RoBERTa matrices after full task training, k = 10 and several ε.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

__all__ = ["similarity", "intruders", "matrix_pairs"]


def similarity(w0: torch.Tensor, w: torch.Tensor, k: int = 10) -> torch.Tensor:
    """sim_j = max_i |cos(u_j, u_{0,i})| for W's top-``k`` left singular vectors u_j [k]."""
    if w0.shape != w.shape or w0.dim() != 2:
        raise ValueError(f"two matrices of one shape are needed, got {tuple(w0.shape)} and {tuple(w.shape)}")
    u0 = torch.linalg.svd(w0.double(), full_matrices=False).U                     # [m, r]
    u = torch.linalg.svd(w.double(), full_matrices=False).U[:, :k]                 # [m, k]
    return (u.T @ u0).abs().max(1).values.float()                                  # unit vectors: |cos| = |dot|


def intruders(w0: torch.Tensor, w: torch.Tensor, k: int = 10, eps: float = 0.6) -> int:
    """How many of W's top-``k`` singular directions are intruders (sim < ``eps``)."""
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"ε must be in (0, 1], got {eps}")
    return int((similarity(w0, w, k) < eps).sum())


def matrix_pairs(base: nn.Module, tuned: nn.Module, suffixes: tuple[str, ...] = ("c_attn.weight", "c_fc.weight"),
                 ) -> Mapping[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (W_0, W)} for the 2-D weights of ``base`` whose names end with ``suffixes``, matched by
    name in ``tuned`` (a merged LoRA or a fine-tuned copy: same names as the base)."""
    tuned_w = dict(tuned.named_parameters())
    out = {}
    for name, p in base.named_parameters():
        if p.dim() == 2 and name.endswith(suffixes):
            if name not in tuned_w:
                raise KeyError(f"{name!r} is not in the tuned model: merge LoRA first (lora.merge_and_unload)")
            out[name] = (p.detach().cpu(), tuned_w[name].detach().cpu())
    if not out:
        raise ValueError(f"no 2-D weight ends with {suffixes}")
    return out
