"""Causal-LM training primitives: pack documents into rows, one epoch of next-token cross-entropy.

Shared by the world-lm recipe (:mod:`lfmlab.zoo.world_lm`) and LM distillation
(:mod:`lfmlab.distill.lm`), which trains a student exactly as world-lm was trained.
"""
from __future__ import annotations

import torch

from lfmlab.core.types import Tokenizer

__all__ = ["pack", "train_epoch"]


def pack(tokenizer: Tokenizer, docs: list[str], row_tokens: int) -> torch.Tensor:
    """Concatenate the tokenised documents (the tokenizer adds each one's BOS) and cut them into
    rows [R, row_tokens]; the incomplete last row is dropped."""
    ids = [i for ids in tokenizer(docs)["input_ids"] for i in ids]
    rows = len(ids) // row_tokens
    return torch.tensor(ids[:rows * row_tokens], dtype=torch.long).view(rows, row_tokens)


def train_epoch(model, rows: torch.Tensor, batch_size: int, opt: torch.optim.Optimizer, sched) -> float:
    """One pass of next-token cross-entropy over packed ``rows`` [R, T] in order (gradient norm
    clipped at 1, one scheduler step per batch). Returns the mean loss per row."""
    total = torch.zeros((), device=rows.device)
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        total += loss.detach() * len(batch)
    return float(total) / max(len(rows), 1)
