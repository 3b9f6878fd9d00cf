"""AdaMerging (Yang et al., "AdaMerging: adaptive model merging for multi-task learning", ICLR 2024;
survey §4.2.3, "gradient-based optimisation").

Task arithmetic uses one hand-picked λ for every task vector and every layer. AdaMerging learns
them: with task vectors τ_t and layer-wise coefficients λ_{t,l},

    θ_l(λ) = θ_pre,l + Σ_t λ_{t,l} τ_{t,l},

and λ is found without labels, by minimising the Shannon entropy of the merged model's
predictions on *unlabelled test inputs* of each task,

    min_λ Σ_t E_{x ∈ X_t} H(p(y | x; θ(λ))).

Entropy is a good surrogate: on these models, low-entropy inputs are mostly the correctly
classified ones. ``granularity="task"`` learns one λ_t per task vector (task-wise AdaMerging).
Each "layer" is one tensor of the state dict, as in the paper's code. λ starts at ``init``
(0.3, the paper's) and is clamped to [0, 1].
"""
from __future__ import annotations

import time
from typing import Literal, Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.state import Merged, merge_keys

__all__ = ["entropy", "marginal_entropy", "adamerging"]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the batch, logits [B, C] -> []."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1).mean()


def marginal_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(mean over the batch of softmax(logits)): high when the batch's predictions are spread over classes."""
    p = torch.softmax(logits, -1).mean(0)                                   # [C]
    return -(p * torch.log(p.clamp_min(1e-12))).sum()


def adamerging(models: Sequence[nn.Module], pretrained: Mapping[str, torch.Tensor],
               finetuned: Sequence[Mapping[str, torch.Tensor]], inputs: Sequence[torch.Tensor],
               keys: Sequence[str] | None = None, granularity: Literal["layer", "task"] = "layer",
               init: float = 0.3, steps: int = 100, lr: float = 1e-2, batch_size: int = 128,
               diversity: float = 0.0, seed: int = 0) -> Merged:
    """Learn merging coefficients by entropy minimisation on unlabelled inputs.

    ``models[t]``: the module that evaluates task t (same keys as ``pretrained`` on ``keys``; its
    other parameters, e.g. a task head, are used as they are). Pass the same model n times when
    the tasks share one head. ``inputs[t]``: unlabelled inputs of task t [N_t, ...].
    ``finetuned[t]``: task t's fine-tuned state dict. No model is changed. Returns the merged
    state (``pretrained`` with ``keys`` replaced); ``info["lambdas"]`` [T, L] and
    ``info["entropy"]`` (per step) tell what was learned.
    """
    from torch.func import functional_call

    if not (len(models) == len(finetuned) == len(inputs)):
        raise ValueError(f"need one model, one fine-tuned state and one input set per task; got "
                         f"{len(models)}, {len(finetuned)}, {len(inputs)}")
    if granularity not in ("layer", "task"):
        raise ValueError(f"granularity must be 'layer' or 'task', got {granularity!r}")
    start = time.perf_counter()
    keys = list(keys) if keys is not None else merge_keys([pretrained, *finetuned])
    pre = {k: pretrained[k].detach() for k in keys}
    taus = {k: torch.stack([ft[k].detach() - pre[k] for ft in finetuned]) for k in keys}    # [T, *shape]
    dev = pre[keys[0]].device
    n_tasks, n_layers = len(finetuned), (len(keys) if granularity == "layer" else 1)
    lam = torch.full((n_tasks, n_layers), float(init), device=dev, requires_grad=True)   # λ [T, L]
    opt = torch.optim.Adam([lam], lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def merged(lam_: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for j, k in enumerate(keys):
            col = lam_[:, j if granularity == "layer" else 0]
            out[k] = pre[k] + torch.tensordot(col.to(taus[k].dtype), taus[k], dims=1)   # θ_l(λ)
        return out

    history = []
    for m in models:
        m.eval()
    for _ in range(steps):
        params = merged(lam)
        loss = 0.0
        for model, x in zip(models, inputs):
            rows = torch.randint(len(x), (min(batch_size, len(x)),), generator=gen).to(x.device)
            logits = functional_call(model, params, (x[rows],))               # [B, C_t]
            loss = loss + entropy(logits)
            if diversity:
                loss = loss - diversity * marginal_entropy(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            lam.clamp_(0.0, 1.0)
        history.append(loss.detach())
    final = {k: v.detach() for k, v in merged(lam.detach()).items()}
    state = {k: v.clone() for k, v in pretrained.items()}
    state.update(final)
    info = {"lambdas": lam.detach().cpu(), "keys": keys,
            "entropy": torch.stack(history).cpu() / n_tasks if history else torch.empty(0)}
    return Merged(
        state,
        f"AdaMerging ({granularity}-wise)",
        {"init": init, "steps": steps, "lr": lr, "batch_size": batch_size, "diversity": diversity},
        time.perf_counter() - start,
        info,
    )
