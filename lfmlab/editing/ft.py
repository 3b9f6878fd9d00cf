"""Fine-tuning as an editor: FT (unconstrained) and FT-L (norm-constrained; Zhu et al. 2020,
survey §6.2.1, eq. 16).

Minimise the new object's negative log-likelihood on the edit prompt by gradient steps on
some weights θ (by default the MLP of one layer, as in the ROME paper's baselines). FT-L adds
the constraint ||θ - θ₀||∞ <= ε, enforced by projecting (clamping) after every step: the
weights may only move a little, so other facts are disturbed less, and the edit is weaker.

The model is unchanged on return: :func:`edit` trains in place, records θ - θ₀ and restores θ₀.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lfmlab.core.lm import pair_batch
from lfmlab.core.params import device_of, evaluating, trainable
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest
from lfmlab.editing.base import EditResult, as_edit
from lfmlab.zoo.layers import layers


@dataclass
class FTConfig:
    layer: int = 0
    scope: str = "mlp"           # "mlp": the layer's MLP weights; "all": every parameter
    steps: int = 25
    lr: float = 5e-3
    linf: float | None = None    # FT-L: ε of ||θ - θ₀||∞ <= ε (None: unconstrained FT)
    stop_nll: float = 0.05


def FTL(layer: int = 0, linf: float = 5e-3, **kw) -> FTConfig:
    """FT-L as in the ROME paper's baseline: the MLP of one layer, ||Δθ||∞ <= ε."""
    return FTConfig(layer=layer, linf=linf, **kw)


def _params(model: nn.Module, cfg: FTConfig) -> dict[str, nn.Parameter]:
    if cfg.scope == "all":
        return dict(model.named_parameters())
    if cfg.scope != "mlp":
        raise ValueError(f"scope must be 'mlp' or 'all', not {cfg.scope!r}")
    prefix = layers(model).mlp_name(cfg.layer) + "."
    return {n: p for n, p in model.named_parameters() if n.startswith(prefix) and p.dim() > 1}


def edit(model: nn.Module, tokenizer: Tokenizer, request: EditRequest, config: FTConfig | None = None) -> EditResult:
    """Fine-tune towards ``request.target_new``; returns the weight change, restores the model."""
    cfg = config or FTConfig()
    request = as_edit(tokenizer, request)  # the edit only: no grading prompt reaches FT
    start = time.perf_counter()
    device = device_of(model)
    batch = pair_batch(tokenizer, [request.prompt], [request.target_new], device)
    params = _params(model, cfg)
    original = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.Adam(params.values(), lr=cfg.lr)
    losses = []
    # eval mode (no dropout: the edit is a deterministic optimisation); only ``params`` take gradients
    with evaluating(model), trainable(model, params):
        try:
            for _ in range(cfg.steps):
                loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
                losses.append(round(loss.item(), 4))
                if loss.item() < cfg.stop_nll:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
                if cfg.linf is not None:  # eq. 16: project back into the ε-ball around θ₀
                    with torch.no_grad():
                        for n, p in params.items():
                            p.copy_(original[n] + (p - original[n]).clamp(-cfg.linf, cfg.linf))
            deltas = {n: (p.detach() - original[n]) for n, p in params.items()}
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(original[n])
    return EditResult(deltas, time.perf_counter() - start, {"loss": losses, "steps": len(losses),
                                                             "linf": cfg.linf, "scope": cfg.scope})
