"""P-tuning (Liu et al. 2021, "GPT Understands, Too"; survey §2.2.1): soft prompts from a prompt encoder.

Instead of learning the soft tokens P [n, d] directly (:mod:`lfmlab.tuning.prompt`), P-tuning
learns pseudo-token embeddings e [n, d] and computes the prompt with a small encoder,

    P = MLP(e)             (kind="mlp": Linear-ReLU-Linear-ReLU-Linear, peft's default), or
    P = MLP(BiLSTM(e))     (kind="lstm": the paper's encoder, which ties the tokens together).

The reparameterisation makes the tokens depend on each other and eases optimisation. After
training the encoder is no longer needed: :func:`bake` stores P itself (n x d numbers).
"""
from __future__ import annotations

import torch
from torch import nn

from lfmlab.core.params import count, frozen_copy
from lfmlab.tuning.prompt import SoftPrompt, SoftPromptLM
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["PromptEncoder", "add_ptuning", "ptuning", "bake"]


class PromptEncoder(nn.Module):
    """P = encoder(e): pseudo-token embeddings e [n, d] -> prompt [n, d] (layout of peft's PromptEncoder)."""

    def __init__(self, n_tokens: int, d: int, hidden: int = 64, kind: str = "mlp", init: torch.Tensor | None = None):
        super().__init__()
        if kind not in ("mlp", "lstm"):
            raise ValueError(f"kind must be 'mlp' or 'lstm', not {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(n_tokens, d)
        if init is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(init)
        if kind == "lstm":
            self.lstm_head = nn.LSTM(d, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, d))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, d))

    def forward(self) -> torch.Tensor:  # -> [n, d]
        e = self.embedding.weight.unsqueeze(0)  # [1, n, d]
        if self.kind == "lstm":
            e = self.lstm_head(e)[0]  # [1, n, 2 * hidden]
        return self.mlp_head(e)[0]


def add_ptuning(
    model: nn.Module, n_tokens: int = 8, hidden: int = 64, kind: str = "mlp", seed: int = 0
) -> SoftPromptLM:
    """A frozen copy of ``model`` reading a prompt computed by a trainable :class:`PromptEncoder`."""
    from lfmlab.tuning.prompt import init_prompt

    base = frozen_copy(model)
    torch.manual_seed(seed)
    d = base.get_input_embeddings().weight.shape[1]
    enc = PromptEncoder(n_tokens, d, hidden, kind, init_prompt(base, n_tokens, "vocab", seed=seed))
    return SoftPromptLM(base, enc.to(base.get_input_embeddings().weight.device), n_tokens)


def bake(model: SoftPromptLM) -> SoftPromptLM:
    """Replace the prompt encoder by the prompt it computes (what is deployed after P-tuning)."""
    with torch.no_grad():
        P = model.source()
    return SoftPromptLM(model.base, SoftPrompt(P), model.n_tokens).eval()


def ptuning(model: nn.Module, data, n_tokens: int = 8, hidden: int = 64, kind: str = "mlp",
            config: TrainConfig | None = None, callback: Callback | None = None) -> TuneResult:
    """P-tuning: train the prompt encoder; ``result.model`` holds the baked prompt."""
    cfg = config or TrainConfig()
    new = add_ptuning(model, n_tokens, hidden, kind, cfg.seed)
    losses, seconds = fit(new, data, cfg, callback, desc=f"P-tuning n={n_tokens}")
    trained = count(new, trainable_only=True)
    return TuneResult(f"P-tuning (n={n_tokens}, {kind})", bake(new), trained, count(model), losses, seconds,
                      {"n_tokens": n_tokens, "kind": kind, "encoder": new.source})
