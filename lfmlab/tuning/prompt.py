"""Prompt tuning (Lester, Al-Rfou & Constant 2021; survey §2.2.1, white-box prompt tuning).

The model stays frozen; n trainable *soft tokens* P [n, d] are put in front of the embedded
input, X = [P; E(x)] [B, n + T, d], and only P learns. Lester et al. initialise P from the
embeddings of real vocabulary tokens (or of a task-describing text): a soft prompt then starts
as a real, if meaningless, prompt in the region of embedding space the model understands.

:class:`SoftPromptLM` is the wrapper shared by prompt tuning, P-tuning (whose prompts come from a
prompt encoder, :mod:`lfmlab.tuning.ptuning`) and black-box tuning (:mod:`lfmlab.tuning.bbt`,
which passes one prompt per row). Its output logits are aligned with ``input_ids`` (the soft
positions are dropped), so it is scored exactly like the base model. Layout as in peft: the soft
tokens come first, before the tokenizer's BOS.
"""
from __future__ import annotations

import torch
from torch import nn

from lfmlab.core.params import count, frozen_copy
from lfmlab.core.types import Tokenizer
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["SoftPrompt", "SoftPromptLM", "Output", "init_prompt", "add_prompt", "prompt_tuning"]


class Output:
    """A minimal model output: ``.logits`` [B, T, V]."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class SoftPrompt(nn.Module):
    """The trainable soft tokens P [n, d] themselves."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(init.detach().clone().float())

    def forward(self) -> torch.Tensor:
        return self.weight


class SoftPromptLM(nn.Module):
    """A frozen causal LM reading ``source()`` [n, d] (or a per-row ``prompt`` [B, n, d]) before its input."""

    def __init__(self, base: nn.Module, source: nn.Module, n_tokens: int):
        super().__init__()
        self.base, self.source, self.n_tokens = base, source, int(n_tokens)
        self.config = base.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                prompt: torch.Tensor | None = None, hidden_only: bool = False, **_) -> Output:
        """Logits [B, T, V] of the real positions; with ``hidden_only`` the hidden states [B, T, d]
        that the LM head (``base.get_output_embeddings()``) maps to them."""
        emb = self.base.get_input_embeddings()(input_ids)  # [B, T, d]
        B = emb.shape[0]
        P = self.source() if prompt is None else prompt
        if P.dim() == 2:
            P = P.unsqueeze(0).expand(B, -1, -1)  # [B, n, d]
        n = P.shape[1]
        mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device) \
            if attention_mask is None else attention_mask
        x = torch.cat([P.to(emb.dtype), emb], dim=1)  # [B, n + T, d]
        full_mask = torch.cat([torch.ones(B, n, dtype=mask.dtype, device=mask.device), mask], dim=1)
        if hidden_only:  # the body's last hidden state (after its final norm), before the LM head
            return self.base.base_model(inputs_embeds=x, attention_mask=full_mask).last_hidden_state[:, n:]
        logits = self.base(inputs_embeds=x, attention_mask=full_mask).logits  # [B, n + T, V]
        return Output(logits[:, n:])


def init_prompt(model: nn.Module, n_tokens: int, init: str = "vocab", text: str | None = None,
                tokenizer: Tokenizer | None = None, seed: int = 0) -> torch.Tensor:
    """Initial soft tokens [n, d] taken from the model's vocabulary embeddings.

    ``init="vocab"``: n tokens drawn at random from the vocabulary (Lester's sampled-vocabulary
    init); ``init="text"``: the tokens of ``text`` (repeated or cut to n; needs ``tokenizer``).
    """
    if n_tokens < 1:
        raise ValueError(f"the soft prompt needs at least one token, got {n_tokens}")
    table = model.get_input_embeddings().weight.detach()  # [V, d]
    if init == "vocab":
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, table.shape[0], (n_tokens,), generator=g)
    elif init == "text":
        if not text or tokenizer is None:
            raise ValueError("init='text' needs a non-empty text and the tokenizer")
        tok = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor((tok * (n_tokens // len(tok) + 1))[:n_tokens])
    else:
        raise ValueError(f"init must be 'vocab' or 'text', not {init!r}")
    return table[ids.to(table.device)].clone()


def add_prompt(model: nn.Module, n_tokens: int = 8, init: str = "vocab", text: str | None = None,
               tokenizer: Tokenizer | None = None, seed: int = 0) -> SoftPromptLM:
    """A :class:`SoftPromptLM` over a frozen copy of ``model``, with n trainable soft tokens."""
    base = frozen_copy(model)
    return SoftPromptLM(base, SoftPrompt(init_prompt(base, n_tokens, init, text, tokenizer, seed)), n_tokens)


def prompt_tuning(model: nn.Module, data, n_tokens: int = 8, init: str = "vocab", text: str | None = None,
                  tokenizer: Tokenizer | None = None, config: TrainConfig | None = None,
                  callback: Callback | None = None) -> TuneResult:
    """Lester prompt tuning: learn n soft tokens in front of the input of a frozen copy of ``model``."""
    cfg = config or TrainConfig()
    new = add_prompt(model, n_tokens, init, text, tokenizer, cfg.seed)
    losses, seconds = fit(new, data, cfg, callback, desc=f"prompt tuning n={n_tokens}")
    return TuneResult(f"prompt tuning (n={n_tokens})", new, count(new, trainable_only=True), count(model), losses,
                      seconds, {"n_tokens": n_tokens, "init": init})

