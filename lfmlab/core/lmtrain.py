"""Causal-LM training primitives: pack documents into rows, one epoch of next-token cross-entropy.

Shared by the world-lm recipe (:mod:`lfmlab.zoo.world_lm`) and LM distillation
(:mod:`lfmlab.distill.lm`), which trains a student exactly as world-lm was trained.
"""
from __future__ import annotations

import torch

from lfmlab.core.types import Tokenizer

__all__ = ["pack", "train_epoch", "sentence_batch", "fit_deltas"]


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


def sentence_batch(tokenizer: Tokenizer, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
    """Right-padded sentences (the tokenizer's BOS first) for next-token cross-entropy:
    (input_ids [B, T], attention_mask [B, T], labels [B, T] with -100 on padding)."""
    from lfmlab.core.lm import encode_prompt, right_pad

    if not texts:
        raise ValueError("no sentences to train on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = right_pad([encode_prompt(tokenizer, t) for t in texts], pad, device)
    return ids, mask, ids.masked_fill(mask == 0, -100)


def fit_deltas(model, names: list[str], loss_fn, steps: int, lr: float,
               stop_loss: float | None = None) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Adam on the parameters ``names`` of ``model`` for at most ``steps`` steps of ``loss_fn()``
    (eval mode: no dropout), stopping early once the loss is under ``stop_loss``. Returns the
    change of each parameter and the losses; the model's parameters are restored exactly."""
    from lfmlab.core.params import evaluating, trainable

    params = dict(model.named_parameters())
    chosen = {n: params[n] for n in names}
    original = {n: p.detach().clone() for n, p in chosen.items()}
    opt = torch.optim.Adam(chosen.values(), lr=lr)
    losses: list[float] = []
    with evaluating(model), trainable(model, chosen):
        try:
            for _ in range(steps):
                loss = loss_fn()
                losses.append(round(loss.item(), 4))
                if stop_loss is not None and losses[-1] < stop_loss:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            deltas = {n: p.detach() - original[n] for n, p in chosen.items()}
        finally:
            opt.zero_grad(set_to_none=True)            # no model-sized gradients left behind
            with torch.no_grad():
                for n, p in chosen.items():
                    p.copy_(original[n])
    return deltas, losses
