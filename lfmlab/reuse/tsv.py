"""TSV-Merge: task singular vectors (Gargiulo, Crisostomi, Bucarelli, Scardapane, Silvestri &
Rodolà, "Task Singular Vectors: Reducing Task Interference in Model Merging", CVPR 2025;
survey §4.2.2, task vectors).

Task arithmetic adds whole task vectors; TSV looks at them **layer by layer, as matrices**. For
the weight matrix of one layer, task i's update is Δ_i = U_i Σ_i V_iᵀ (its SVD, the *task
singular vectors*).

1. **Compress** (TSV-C): keep each task's top k = ⌊r / T⌋ singular triplets (r = min(m, n), T the
   number of tasks): a small share of the rank holds most of what fine-tuning did.
2. **Decorrelate**: stack the kept vectors of all tasks, U = [U_1 … U_T] (m × Tk),
   Σ = blockdiag(Σ_1 … Σ_T), V = [V_1 … V_T] (n × Tk). Tasks interfere where their singular
   vectors overlap; the *singular task interference* measures it,

   $$\\mathrm{STI} = \\big\\| (UᵀU - I)\\,Σ\\,(VᵀV - I) \\big\\|_1$$

   (eq. 5 of the paper). TSV replaces U and V by the nearest matrices with orthonormal columns
   (orthogonal Procrustes: U = P S Qᵀ → U⊥ = P Qᵀ, and the same for V), which makes STI zero.
3. **Merge**: ΔW = U⊥ Σ V⊥ᵀ, and W = W_pre + α ΔW with α = 1 (the paper's default; it tunes α
   on validation data only as an ablation).

Tensors that are not matrices (biases) are merged by the mean of their task vectors, scaled by α,
as in the authors' code. Simplification: the paper's models are ViTs and every 2-D weight of
them is treated; here every 2-D trunk weight of an MLP is, the same rule.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch

from lfmlab import validate
from lfmlab.core.state import Merged, merge_keys

__all__ = ["task_singular_vectors", "orthogonalise", "interference", "merge_layer", "tsv_merge"]


def task_singular_vectors(deltas: Sequence[torch.Tensor], k: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 1: each Δ_i [m, n] cut to its top-k triplets, stacked: U [m, Tk], σ [Tk], V [n, Tk]."""
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d.double(), full_matrices=False)
        us.append(u[:, :k]), ss.append(s[:k]), vs.append(vh[:k].T)
    return torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)


def orthogonalise(m: torch.Tensor) -> torch.Tensor:
    """Step 2: the matrix with orthonormal columns nearest to m [p, q] (Procrustes): P Qᵀ from m = P S Qᵀ."""
    p, _, qh = torch.linalg.svd(m, full_matrices=False)
    return p @ qh


def interference(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> float:
    """STI = ‖(UᵀU − I) Σ (VᵀV − I)‖_1 (entrywise), for stacked U [m, Tk], σ [Tk], V [n, Tk]."""
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return float(((u.T @ u - eye) @ torch.diag(s) @ (v.T @ v - eye)).abs().sum())


def merge_layer(deltas: Sequence[torch.Tensor], share: float | None = None, decorrelate: bool = True
                ) -> tuple[torch.Tensor, dict]:
    """ΔW of one weight matrix from the tasks' Δ_i [m, n]: compress, decorrelate, recombine.

    ``share``: the share of the rank each task keeps (default 1/T). ``decorrelate=False`` gives
    TSV-C's plain sum of the compressed task matrices. Returns (ΔW, {"k", "STI before", "STI after"}).
    """
    t = len(deltas)
    r = min(deltas[0].shape)
    k = max(1, int((1.0 / t if share is None else share) * r))
    u, s, v = task_singular_vectors(deltas, k)
    before = interference(u, s, v)
    if decorrelate:
        u, v = orthogonalise(u), orthogonalise(v)
    after = interference(u, s, v)
    return (u @ torch.diag(s) @ v.T).to(deltas[0].dtype), {"k": k, "STI before": before, "STI after": after}


def tsv_merge(pretrained: Mapping[str, torch.Tensor], finetuned: Sequence[Mapping[str, torch.Tensor]],
              alpha: float = 1.0, share: float | None = None, decorrelate: bool = True,
              keys: Sequence[str] | None = None) -> Merged:
    """TSV-Merge of ``finetuned`` onto ``pretrained``: W_pre + α ΔW, layer by layer (see the module).

    ``share``: the share of each layer's rank kept per task (default 1/T, the paper's; at most
    1/T so that the T tasks fit in the layer's rank when they are decorrelated).
    ``decorrelate=False``: TSV-C, the compressed task vectors summed without decorrelation.
    ``info``: ``STI before`` and ``STI after`` (summed over the layers), ``k`` per layer.
    """
    start = time.perf_counter()
    validate.items("finetuned", finetuned, fix="Give at least one fine-tuned state dict.")
    alpha = validate.number("α", alpha, fix="α scales the merged update; the paper uses 1.0.")
    n = len(finetuned)
    if share is not None:
        share = validate.number("share", share, 0.0, 1.0 / n, lo_open=True,
                                fix=f"Each of the {n} tasks keeps at most 1/{n} of a layer's rank, e.g. {1 / n:.3g}.")
    keys = list(keys) if keys is not None else merge_keys([pretrained, *finetuned])
    out = {k: v.clone() for k, v in pretrained.items()}
    sti_before = sti_after = 0.0
    ranks = {}
    for key in keys:
        deltas = [ft[key] - pretrained[key] for ft in finetuned]
        if pretrained[key].dim() == 2:
            delta, info = merge_layer(deltas, share, decorrelate)
            sti_before += info["STI before"]
            sti_after += info["STI after"]
            ranks[key] = info["k"]
        else:
            delta = torch.stack(deltas).mean(0)
        out[key] = pretrained[key] + alpha * delta
    info = {"STI before": sti_before, "STI after": sti_after, "k": ranks}
    name = "TSV-M" if decorrelate else "TSV-C"
    return Merged(out, name, {"alpha": alpha, "share": share, "decorrelate": decorrelate},
                  time.perf_counter() - start, info)
