"""MEMIT: Mass-Editing Memory in a Transformer (Meng, Sen Sharma, Andonian, Belinkov, Bau,
ICLR 2023; survey §6.2.2).

ROME rewrites one association in one layer. MEMIT inserts many at once, spread over a range
of MLP layers R = {l_1 < ... < l_L}:

1. for each edit i, a target z_i for the *residual stream* after the top layer l_L at the
   subject's last token, found like ROME's v* (δ added to that hidden state, optimised so the
   model says o*_i, with the KL essence term and a norm clamp);
2. for each layer l in R, bottom to top, with the earlier layers' updates in place:
   keys K = [k_i] at l (averaged over prefixes) and residuals R = [z_i - h_i] at the top,
   shared out over the layers still to come (divide by L - position of l); then

       ΔW_l = R Kᵀ (λ C_l + K Kᵀ)⁻¹

   the least-squares update that writes all new associations while staying close to the
   layer's old keys, whose covariance C_l is weighted by λ (``mom2_weight``).

What it holds on world-lm (measured in notebook 07): 10 edits at once keep efficacy and the
neighbourhood score ≥ 0.9; 100 at once reach only efficacy 0.71 / neighbourhood score 0.83
(full run), because world-lm's layer-0 subject keys are not distinct enough. The paper's
10,000 edits on GPT-J rely on many wide middle layers.

The model is unchanged on return; all edits come back as one delta.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lfmlab.core.hooks import run_until
from lfmlab.core.lm import encode_prompt, right_pad
from lfmlab.core.params import device_of, evaluating
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest
from lfmlab.editing import rome
from lfmlab.editing.base import EditResult, applied, as_edit, merge
from lfmlab.editing.covariance import key_covariance
from lfmlab.zoo.layers import as_weight_layout, layers


@dataclass
class MemitConfig(rome.RomeConfig):
    edit_layers: tuple[int, ...] = (0, 1, 2, 3)
    v_steps: int = 40               # the targets z on the residual stream: as measured for them
    v_lr: float = 1.0
    mom2_weight: float = (
        100.0  # λ: weight of the old keys (C = E[kkᵀ]); ~1e4 suits GPT-J's 16k-dim keys, 100 world-lm's 512
    )


def _top_hidden(model, tokenizer: Tokenizer, pairs: list[tuple[str, str]], top: int, rows: int = 512) -> torch.Tensor:
    """The residual stream after block ``top`` at the subject's last token of each bare
    (prompt, subject) pair [n, d], in right-padded batches (the forward pass stops at ``top``)."""
    name = layers(model).block_name(top)
    device = device_of(model)
    out = []
    for i in range(0, len(pairs), rows):
        part = pairs[i:i + rows]
        enc = [encode_prompt(tokenizer, prompt) for prompt, _ in part]
        pos = torch.cat([rome._positions(tokenizer, [prompt], subject, [0]) for prompt, subject in part])
        ids, mask = right_pad(enc, device=device)
        with torch.no_grad():
            hidden = run_until(model, name, input_ids=ids, attention_mask=mask)
        out.append(hidden[torch.arange(len(enc), device=device), pos.to(device)])
    return torch.cat(out)


def targets(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest], config: MemitConfig,
            prefixes: list[str]) -> torch.Tensor:
    """Step 1: the target z_i for the residual stream after the top edited layer, per request [n, d].
    Each is independent of the others, so a batch can reuse them for any subset of its requests."""
    cfg = config
    module = layers(model).block_name(max(cfg.edit_layers))
    requests = [as_edit(tokenizer, r) for r in requests]
    return rome.compute_values(model, tokenizer, requests, prefixes, cfg, module=module)[0]   # one batched run


def solve(layer: int, K: torch.Tensor, R: torch.Tensor, C: torch.Tensor, cfg: MemitConfig) -> torch.Tensor:
    """MEMIT's per-layer least squares: (λ C + KᵀK)⁻¹ Kᵀ R [4d, d] for keys K [n, 4d] and
    residuals R [n, d] (in float64; the key layout, the transpose of the paper's ΔW)."""
    A = cfg.mom2_weight * C.to(K.device, torch.float64) + K.double().T @ K.double()  # [4d, 4d]
    return torch.linalg.solve(A, K.double().T @ R.double())


def edit(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest], config: MemitConfig | None = None,
         covs: dict[int, torch.Tensor] | None = None, prefixes: list[str] | None = None,
         z: torch.Tensor | None = None, solver: Callable | None = None) -> EditResult:
    """Insert all ``requests`` at once. Returns the summed weight delta of every edited layer.
    ``z`` [n, d]: the requests' targets from :func:`targets` (computed here when None).
    ``solver(layer, K, R, C, cfg) -> update [4d, d]`` replaces :func:`solve` (AlphaEdit's projected
    solve is one); everything else (targets, keys, the residual shared over layers) is MEMIT's."""
    cfg = config or MemitConfig()
    solver = solver or solve
    requests = [as_edit(tokenizer, r) for r in requests]  # the edits only, not their exams
    subjects = [r.subject for r in requests]
    if len(set(subjects)) != len(subjects):
        raise ValueError("MEMIT edits one fact per subject in a batch; split requests that share a subject.")
    start = time.perf_counter()
    layout = layers(model)
    top = max(cfg.edit_layers)
    with evaluating(model):
        prefixes = (
            rome.random_prefixes(model, tokenizer, cfg.n_prefixes, cfg.prefix_tokens, cfg.seed)
            if prefixes is None
            else prefixes
        )
        covs = covs or {}
        # 1. targets z_i for the residual stream after the top layer
        z = targets(model, tokenizer, requests, cfg, prefixes) if z is None else z  # [n, d]
        if z.shape[0] != len(requests):
            raise ValueError(f"got {z.shape[0]} targets for {len(requests)} requests")
        deltas: dict[str, torch.Tensor] = {}
        for j, layer in enumerate(sorted(cfg.edit_layers)):
            name = layout.mlp_out_name(layer)
            module = model.get_submodule(name)
            C = covs.get(layer)
            if C is None:
                C = key_covariance(model, tokenizer, layer)
            with applied(model, deltas):
                K = rome.compute_keys(model, tokenizer, [(r.subject, r.prompt) for r in requests],
                                      prefixes, layer)[0]                                  # [n, 4d]
                h = _top_hidden(model, tokenizer, [(r.prompt, r.subject) for r in requests], top)  # [n, d]
            R = (z - h) / (len(cfg.edit_layers) - j)  # [n, d] this layer's share of the residual
            with torch.no_grad():
                upd = solver(layer, K, R, C, cfg).to(K.dtype)  # MEMIT: (λC + KᵀK)⁻¹ Kᵀ R  [4d, d]
            d = as_weight_layout(module, upd)
            deltas = merge(deltas, {f"{name}.weight": d})
    return EditResult(deltas, time.perf_counter() - start,
                      {"layers": list(cfg.edit_layers), "n": len(requests), "mom2_weight": cfg.mom2_weight})


@torch.no_grad()
def spill(model: nn.Module, tokenizer: Tokenizer, deltas: dict[str, torch.Tensor], edited: list[EditRequest],
          others: list[tuple[str, str]], top: int) -> dict[str, float]:
    """How much of a batch update lands on subjects nobody edited.

    For each bare prompt, the change of the residual stream after block ``top`` at the subject's
    last token when ``deltas`` are applied, relative to its norm: ‖Δh‖ / ‖h‖, the median over
    the ``edited`` requests' prompts and over ``others``. ``others`` are
    (prompt, subject) pairs of unedited subjects. MEMIT wants "edited" near its targets'
    ‖z - h‖ / ‖h‖ and "others" near 0; their ratio grows with the batch when the edited keys
    are not distinct from the keys of other subjects (the least-squares update
    R Kᵀ(λC + KKᵀ)⁻¹ answers every key in the span of the edited ones).
    """
    def hidden(pairs: list[tuple[str, str]]) -> torch.Tensor:  # [len(pairs), d]
        return _top_hidden(model, tokenizer, pairs, top)

    def relative_change(pairs: list[tuple[str, str]]) -> float:
        if not pairs:
            return float("nan")
        before = hidden(pairs)
        with applied(model, deltas):
            after = hidden(pairs)
        return float(((after - before).norm(dim=1) / before.norm(dim=1)).median())

    mine = relative_change([(r.prompt, r.subject) for r in edited])
    theirs = relative_change(others)
    return {"edited": mine, "others": theirs, "ratio": theirs / mine if mine > 0 else float("nan")}
