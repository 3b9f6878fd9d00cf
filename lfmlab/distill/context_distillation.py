"""Context distillation: a model that reads a text in its context teaches a copy of itself to
behave as if it had read it (Snell, Klein & Zhong 2022, "Learning by distilling context";
Padmanabhan et al., NeurIPS 2023, "Propagating knowledge updates to LMs through distillation").

The teacher is the model with the context c (here: a new fact's sentence) before its input;
the student is the same model without it. On a *transfer set* of sequences x, the student is
trained to match the teacher's next-token distributions (the objective of both papers):

    min_θ  Σ_x Σ_t  KL( p_θ0(· | c, x_<t)  ‖  p_θ(· | x_<t) ),

with the teacher's parameters θ0 frozen and the student starting from θ0. Padmanabhan et al.
build the transfer set by sampling continuations of the entity's definition from a generator
model; :func:`transfer_set` samples, from the teacher itself (the model with the fact in
context), ``samples`` continuations of ``sample_tokens`` tokens after the subject's name
(temperature 1), to which the caller may add texts (the arena adds the fact's other unscored
wordings). This is the simplification: one model is generator, teacher and student.

Simplifications: every parameter of the student is trained (Padmanabhan et al. tune the full
model as well), for a fixed number of Adam steps; the KL is summed over the whole vocabulary at
every position after the transfer sequence's first token and averaged over positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.lm import encode_prompt, right_pad
from lfmlab.core.lmtrain import fit_deltas
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer

__all__ = ["ContextDistillConfig", "transfer_set", "teacher_logprobs", "distill"]

Deltas = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ContextDistillConfig:
    steps: int = 8
    lr: float = 1e-4             # chosen on the arena's updates of seeds 11-12 (never the graded seeds)
    samples: int = 4             # sampled continuations of the subject in the transfer set
    sample_tokens: int = 8
    seed: int = 0


def _validate(cfg: ContextDistillConfig) -> None:
    if cfg.steps < 1 or cfg.samples < 0 or cfg.sample_tokens < 1 or not cfg.lr > 0:
        raise ValueError(f"context distillation needs steps >= 1, samples >= 0, sample_tokens >= 1 and lr > 0; "
                         f"got {cfg}")


@torch.no_grad()
def transfer_set(model: nn.Module, tokenizer: Tokenizer, context: str, subject: str, samples: int, tokens: int,
                 seed: int = 0) -> list[str]:
    """``samples`` continuations of ``subject`` sampled from the teacher (the model reading
    ``context`` first), each ``tokens`` tokens long, as text starting with the subject."""
    if samples == 0:
        return []
    device = device_of(model)
    ctx, subj = encode_prompt(tokenizer, context), encode_prompt(tokenizer, subject)
    bos = tokenizer.bos_token_id
    start = ctx + (subj[1:] if bos is not None and subj[:1] == [bos] else subj)
    ids = torch.tensor([start] * samples, device=device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    for _ in range(tokens):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1].float()
        nxt = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=g).to(device)
        ids = torch.cat([ids, nxt], 1)
    return [subject + tokenizer.decode(row[len(start):].tolist(), skip_special_tokens=True) for row in ids]


@torch.no_grad()
def teacher_logprobs(model: nn.Module, tokenizer: Tokenizer, context: str, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
    """log p_θ0(· | c, x_<t) at every position of the right-padded rows [B, T] -> [B, T, V]."""
    ctx = encode_prompt(tokenizer, context)
    bos = tokenizer.bos_token_id
    rows = []
    for i in range(len(input_ids)):
        row = input_ids[i, :int(attention_mask[i].sum())].tolist()
        rows.append(ctx + (row[1:] if bos is not None and row[:1] == [bos] else row))
    shift = len(ctx) - (1 if bos is not None and input_ids[0, 0].item() == bos else 0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = right_pad(rows, pad, input_ids.device)
    out = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
    return out[:, shift:shift + input_ids.shape[1]]


def distill(model: nn.Module, tokenizer: Tokenizer, context: str, transfer: list[str],
            config: ContextDistillConfig | None = None) -> tuple[Deltas, list[float]]:
    """Train every parameter of ``model`` so that, without ``context``, it predicts on the
    ``transfer`` texts what it predicts with it. Returns the change and the losses (mean KL per
    position); the model is restored."""
    cfg = config or ContextDistillConfig()
    _validate(cfg)
    if not transfer:
        raise ValueError("the transfer set is empty: give at least one text to distil on")
    device = device_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = right_pad([encode_prompt(tokenizer, t) for t in transfer], pad, device)
    target = teacher_logprobs(model, tokenizer, context, ids, mask)          # [B, T, V], frozen teacher
    keep = mask.clone()
    keep[:, 0] = 0                                                           # after the first token
    keep = keep.bool()

    def loss() -> torch.Tensor:
        student = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
        kl = F.kl_div(student[keep], target[keep], log_target=True, reduction="none").sum(-1)
        return kl.mean()

    names = [n for n, _ in model.named_parameters()]
    return fit_deltas(model, names, loss, cfg.steps, cfg.lr)
