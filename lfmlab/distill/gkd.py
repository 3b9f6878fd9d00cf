"""Generalised knowledge distillation (GKD) of a causal LM, on-policy and off.

Agarwal et al., "On-Policy Distillation of Language Models: Learning from Self-Generated
Mistakes", ICLR 2024 (survey §3; the white-box counterpart of :mod:`lfmlab.distill.lm`).
Supervised KD trains the student on output sequences it did not write (a fixed set, here the
teacher's own greedy answers), so at inference it meets prefixes of its own making that it never
trained on: the train/inference mismatch of imitation learning. GKD's Algorithm 1: at each step,
with probability λ the outputs of the batch are **sampled from the student** (on-policy), else
taken from the fixed set; either way the student is trained to match the teacher's next-token
distribution at every output position, token by token, with the **generalised JSD** (eq. 1)

.. math::  D_{JSD(\\beta)}(P\\,\\|\\,Q) = \\beta\\,\\mathrm{KL}(P\\,\\|\\,M) + (1-\\beta)\\,\\mathrm{KL}(Q\\,\\|\\,M),
           \\qquad M = \\beta P + (1-\\beta) Q,

P the teacher's and Q the student's distribution (both at temperature τ). As in TRL's
``generalized_jsd_loss``, β = 0 is read as the forward KL(P‖Q) (the limit of D/β) and β = 1 as
the reverse KL(Q‖P): mode-covering to mode-seeking. No gradient flows through the sampling (the
paper's choice: "we do not backpropagate through the student's sampling distribution").
``divergence="ce"`` replaces the divergence by cross-entropy on the output tokens: with λ = 0
that is sequence-level KD (Kim & Rush 2016), the black-box recipe of :mod:`lfmlab.distill.lm`.

The student (:func:`shrink`) is the teacher with some of its blocks removed (every other one
by default), the initialisation of DistilBERT (Sanh et al. 2019); it shares the teacher's
tokenizer, as token-level KD needs.

Simplifications, stated:
* the student is initialised from the teacher's own layers, not fine-tuned first on the task
  (the paper starts GKD from a supervised fine-tuned student);
* outputs are short (``max_new_tokens``, the answer to a fact prompt), sampled at τ = 1;
* λ decides per batch, as in Algorithm 1 (not per example);
* Adam at a constant learning rate (the paper uses Adafactor).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab import validate
from lfmlab.core.lm import encode_prompt, right_pad
from lfmlab.core.params import device_of, evaluating, frozen
from lfmlab.core.types import Tokenizer
from lfmlab.progress import progress

__all__ = ["GKDConfig", "GKDResult", "generalized_jsd", "shrink", "sample", "teacher_outputs", "gkd",
           "agreement", "on_policy_gap"]


@dataclass
class GKDConfig:
    """GKD's two knobs (λ, β), the loss temperature and the training budget."""

    lam: float = 0.5                # λ: share of batches whose outputs the student samples (on-policy)
    beta: float = 0.5               # β of the generalised JSD: 0 forward KL, 1 reverse KL
    divergence: str = "jsd"         # "jsd" (eq. 1), or "ce": cross-entropy on the output tokens
    temperature: float = 1.0        # τ of both distributions in the loss
    sample_temperature: float = 1.0  # τ of the student's on-policy samples
    max_new_tokens: int = 4         # length of an output (an answer)
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        validate.number("lam", self.lam, 0.0, 1.0, fix="λ is a share of batches, in [0, 1].")
        validate.number("beta", self.beta, 0.0, 1.0, fix="β is in [0, 1]: 0 forward KL, 1 reverse KL.")
        validate.choice("divergence", self.divergence, ("jsd", "ce"))
        for name in ("temperature", "sample_temperature", "lr"):
            validate.number(name, getattr(self, name), 0.0, lo_open=True, fix=f"{name} must be > 0.")
        for name in ("max_new_tokens", "steps", "batch_size"):
            validate.number(name, getattr(self, name), 1, integer=True, fix=f"{name} is a count, at least 1.")


@dataclass
class GKDResult:
    """The student (eval mode), the config, the loss per step, which steps were on-policy, the
    teacher's forward passes (one per step) and the wall time."""

    student: nn.Module
    config: GKDConfig
    losses: list[float] = field(default_factory=list)
    on_policy: list[bool] = field(default_factory=list)
    teacher_passes: int = 0
    seconds: float = 0.0


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float,
                    temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean generalised JSD (eq. 1) over positions: logits [..., V], ``mask`` [...] (True = counted).

    β = 0: KL(teacher‖student); β = 1: KL(student‖teacher); else β KL(P‖M) + (1-β) KL(Q‖M)
    with M = β P + (1-β) Q, computed in log space (logsumexp) as TRL does."""
    s = F.log_softmax(student_logits.float() / temperature, -1)
    t = F.log_softmax(teacher_logits.float() / temperature, -1)
    if beta == 0:
        per = (t.exp() * (t - s)).sum(-1)
    elif beta == 1:
        per = (s.exp() * (s - t)).sum(-1)
    else:
        b = torch.tensor(float(beta), device=s.device)
        m = torch.logsumexp(torch.stack([t + b.log(), s + torch.log1p(-b)]), 0)
        per = beta * (t.exp() * (t - m)).sum(-1) + (1 - beta) * (s.exp() * (s - m)).sum(-1)
    if mask is None:
        return per.mean()
    mask = mask.to(per.dtype)
    return (per * mask).sum() / mask.sum().clamp_min(1.0)


def shrink(teacher: nn.Module, keep: Sequence[int] | None = None) -> nn.Module:
    """A new, smaller GPT-2 made of the teacher's embeddings, final norm, head and the blocks
    ``keep`` (default: every other block, 0, 2, 4, ...), as DistilBERT initialises its student."""
    blocks = getattr(getattr(teacher, "transformer", None), "h", None)
    if blocks is None:
        raise ValueError("shrink needs a GPT-2 layout model (model.transformer.h), such as world-lm; "
                         f"got {type(teacher).__name__}")
    n = len(blocks)
    keep = list(range(0, n, 2)) if keep is None else [int(i) for i in keep]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < n for i in keep):
        raise ValueError(f"keep must list distinct block indices in 0..{n - 1}, got {keep}")
    student = copy.deepcopy(teacher)
    student.transformer.h = nn.ModuleList([student.transformer.h[i] for i in keep])
    for j, block in enumerate(student.transformer.h):
        if hasattr(block.attn, "layer_idx"):
            block.attn.layer_idx = j
    student.config.n_layer = len(keep)
    return student.eval()


@torch.no_grad()
def sample(model: nn.Module, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, greedy: bool = False) -> list[list[int]]:
    """Continue each prompt (token ids) by ``max_new_tokens`` tokens, sampled at ``temperature``
    (or greedily): one right-padded batch, one forward pass per new token. Returns the new ids."""
    device = device_of(model)
    seqs = [list(p) for p in prompts]
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    rows = torch.arange(len(prompts), device=device)
    for _ in range(max_new_tokens):
        ids, mask = right_pad(seqs, device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits[rows, lengths - 1].float()
        if greedy:
            nxt = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        for s, t in zip(seqs, nxt.tolist()):
            s.append(t)
        lengths = lengths + 1
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def teacher_outputs(teacher: nn.Module, tokenizer: Tokenizer, prompts: list[str], max_new_tokens: int = 4,
                    batch_size: int = 256) -> list[list[int]]:
    """The fixed output set: the teacher's greedy continuation of each prompt (token ids)."""
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    out: list[list[int]] = []
    with evaluating(teacher):
        for i in range(0, len(ids), batch_size):
            out += sample(teacher, ids[i:i + batch_size], max_new_tokens, greedy=True)
    return out


def _batch(prompts: list[list[int]], outputs: list[list[int]], device) -> tuple[torch.Tensor, ...]:
    """Right-padded prompt + output rows, their mask, and a mask of the positions that *predict*
    an output token (position t predicts token t + 1)."""
    ids, mask = right_pad([p + o for p, o in zip(prompts, outputs)], device=device)
    predicts = torch.zeros_like(mask, dtype=torch.bool)
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        predicts[i, len(p) - 1:len(p) + len(o) - 1] = True
    return ids, mask, predicts


def gkd(teacher: nn.Module, student: nn.Module, tokenizer: Tokenizer, prompts: list[str],
        config: GKDConfig | None = None, fixed: list[list[int]] | None = None, show: bool = True) -> GKDResult:
    """Train a copy of ``student`` by GKD (Algorithm 1) on ``prompts``; ``teacher`` and ``student``
    are left unchanged. ``fixed``: the fixed outputs (default: :func:`teacher_outputs`)."""
    config = config or GKDConfig()
    if not prompts:
        raise ValueError("gkd needs prompts to distil on, e.g. world.prompt(subject, 'capital') for some subjects")
    if len(tokenizer) > student.get_output_embeddings().weight.shape[0]:
        raise ValueError("teacher and student must share the tokenizer (token-level KD); build the student "
                         "with gkd.shrink(teacher)")
    device = device_of(teacher)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    fixed = fixed if fixed is not None else teacher_outputs(teacher, tokenizer, prompts, config.max_new_tokens)
    gen = torch.Generator().manual_seed(config.seed)
    model = copy.deepcopy(student).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    result = GKDResult(model, config)
    start = time.perf_counter()
    with frozen(teacher), evaluating(teacher):
        for _ in progress(range(config.steps), desc=f"GKD λ={config.lam:g} β={config.beta:g}", disable=not show):
            rows = torch.randint(len(ids), (min(config.batch_size, len(ids)),), generator=gen).tolist()
            batch = [ids[r] for r in rows]
            on = bool(torch.rand((), generator=gen) < config.lam)
            if on:
                with evaluating(model):
                    outputs = sample(model, batch, config.max_new_tokens, config.sample_temperature, gen)
            else:
                outputs = [fixed[r] for r in rows]
            x, mask, predicts = _batch(batch, outputs, device)
            logits = model(input_ids=x, attention_mask=mask).logits
            if config.divergence == "ce":
                target = torch.where(predicts, x.roll(-1, 1), torch.full_like(x, -100))
                loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100)
            else:
                with torch.no_grad():
                    t_logits = teacher(input_ids=x, attention_mask=mask).logits
                result.teacher_passes += 1
                loss = generalized_jsd(logits, t_logits, config.beta, config.temperature, predicts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            result.losses.append(loss.item())
            result.on_policy.append(on)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def agreement(student: nn.Module, teacher: nn.Module, tokenizer: Tokenizer, prompts: list[str],
              max_new_tokens: int = 4, teacher_out: list[list[int]] | None = None) -> float:
    """Share of prompts whose greedy continuation (``max_new_tokens`` tokens) the student and the
    teacher write identically."""
    if not prompts:
        return float("nan")
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    t = teacher_out if teacher_out is not None else teacher_outputs(teacher, tokenizer, prompts, max_new_tokens)
    with evaluating(student):
        s = [o for i in range(0, len(ids), 256) for o in sample(student, ids[i:i + 256], max_new_tokens, greedy=True)]
    return sum(a == b for a, b in zip(s, t)) / len(ids)


@torch.no_grad()
def on_policy_gap(student: nn.Module, teacher: nn.Module, tokenizer: Tokenizer, prompts: list[str],
                  beta: float = 0.5, max_new_tokens: int = 4, seed: int = 0) -> dict[str, float]:
    """What the student meets at inference: on outputs it samples itself (τ = 1) after
    ``prompts``, the mean generalised JSD_β to the teacher per output token (``divergence``) and
    the student's mean entropy there in nats (``entropy``; reverse KL makes it mode-seeking)."""
    if not prompts:
        return {"divergence": float("nan"), "entropy": float("nan")}
    device = device_of(teacher)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    gen = torch.Generator().manual_seed(seed)
    div, ent, n = 0.0, 0.0, 0
    with evaluating(student), evaluating(teacher):
        for i in range(0, len(ids), 256):
            batch = ids[i:i + 256]
            outs = sample(student, batch, max_new_tokens, 1.0, gen)
            x, mask, predicts = _batch(batch, outs, device)
            s_logits = student(input_ids=x, attention_mask=mask).logits
            t_logits = teacher(input_ids=x, attention_mask=mask).logits
            k = int(predicts.sum())
            div += float(generalized_jsd(s_logits, t_logits, beta, 1.0, predicts)) * k
            lp = F.log_softmax(s_logits[predicts].float(), -1)
            ent += float(-(lp.exp() * lp).sum(-1).sum())
            n += k
    return {"divergence": div / n, "entropy": ent / n}
