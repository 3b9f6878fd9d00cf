"""Distilling a language model from its outputs only: sequence-level KD from a black box.

Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016; the black-box setting of
survey §3 (model-as-a-service: no weights, no gradients, no logits, no training data). The
teacher is an API that continues prompts; the student is trained, by ordinary next-token
cross-entropy, on the texts the teacher writes. Word-level KD would match the teacher's
next-token distribution at every position; sequence-level KD replaces that distribution by
samples from it (Kim & Rush use the teacher's beam output), which is all a black box gives.

1. **Ask** (:func:`ask_teacher`): continuations of prompts we choose: the empty prompt (the
   teacher starts from its BOS token and writes whatever it likes) and generic openings ("The
   capital of"). Sampling trades variety for fidelity: at τ = 1 the teacher also writes its
   rarer mistakes, greedy decoding repeats its single favourite text. So the first few new
   tokens (the *topic*: which country, which element) are sampled at τ = 1 and the rest is
   decoded greedily, the teacher's mode, as Kim & Rush's beam output.
2. **Tokenise** (:func:`build_student`): the student gets its *own* byte-level BPE, trained on
   the teacher's texts (the teacher's tokenizer is part of its internals).
3. **Train** (:func:`train_student`): a smaller GPT-2 on the packed texts.

:func:`distill_lm` does all three. The caller measures what the student learned, e.g. fact
recall with :func:`lfmlab.data.world.recall` (the facts are only used to *measure*).

>>> api = black_box(teacher_model, teacher_tokenizer)            # prompts -> texts, nothing else
>>> r = distill_lm(api, LMDistillConfig(n_texts=6000))
>>> world.recall(r.student, r.tokenizer, world.load().facts_of(split="train"))
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from lfmlab.core.lmtrain import pack, train_epoch
from lfmlab.core.params import device_of, evaluating
from lfmlab.core.schedules import cosine
from lfmlab.core.types import Tokenizer
from lfmlab.progress import progress

__all__ = ["LMDistillConfig", "LMDistillResult", "black_box", "ask_teacher", "build_student", "train_student",
           "distill_lm", "BlackBox", "OPENINGS"]

# (prompts [B], temperature, max_new_tokens, seed) -> the full texts, prompt included [B]
BlackBox = Callable[[list[str], float, int, int], list[str]]

OPENINGS = ("", "The capital of", "The official language of", "The currency of", "The ISO country code of",
            "The chemical symbol of", "The continent of")


@dataclass
class LMDistillConfig:
    """What to ask the teacher, and how big and how long the student trains."""

    n_texts: int = 6000
    prompts: tuple[str, ...] = ("",)           # "" = start from BOS; each prompt gets an equal share
    temperature: float = 1.0                   # of the topic: the first topic_tokens new tokens
    topic_tokens: int = 4                      # 0: sample the whole text at ``temperature``
    answer_temperature: float = 0.0            # of the rest (0: greedy)
    max_new_tokens: int = 40
    batch: int = 500                           # texts per call to the black box
    dedupe: bool = True                        # keep each distinct text once
    vocab_size: int = 1024
    arch: dict = field(default_factory=lambda: dict(n_layer=2, n_embd=128, n_head=4, n_positions=128,
                                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    epochs: int = 30
    row_tokens: int = 32
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 0.01
    seed: int = 0


@dataclass
class LMDistillResult:
    """The student (eval mode) and its tokenizer; the teacher's texts it learned from; the
    loss per epoch; the time spent asking the teacher and training the student."""

    student: nn.Module
    tokenizer: object
    texts: list[str]
    losses: list[float]
    ask_seconds: float
    train_seconds: float
    n_asked: int

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.student.parameters())
        return (f"LMDistillResult(student {n:,} parameters, {len(self.texts):,} distinct texts from {self.n_asked:,} "
                f"asked, final loss {self.losses[-1]:.3f}, asking {self.ask_seconds:.0f}s + training "
                f"{self.train_seconds:.0f}s)")


def black_box(model: nn.Module, tokenizer: Tokenizer) -> BlackBox:
    """Wrap a causal LM as an API that only returns text: ``api(prompts, τ, max_new_tokens, seed)``.

    Each text is the prompt plus a continuation, sampled at temperature τ (τ = 0: greedy, the
    teacher's single most likely text), cut at the first end-of-text token. Prompts of one call
    are grouped by their token length, so no padding is needed.
    """
    @torch.no_grad()
    def api(prompts: list[str], temperature: float, max_new_tokens: int, seed: int) -> list[str]:
        dev = device_of(model)
        out: list[str] = [""] * len(prompts)
        encoded = tokenizer(list(prompts))["input_ids"]
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            by_length.setdefault(len(ids), []).append(i)
        sample = dict(do_sample=True, top_k=0, temperature=temperature) if temperature > 0 else dict(do_sample=False)
        with evaluating(model), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for rows in by_length.values():
                ids = torch.tensor([encoded[i] for i in rows], device=dev)                  # [B, L]
                seqs = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      pad_token_id=tokenizer.eos_token_id, **sample)        # [B, L + new]
                for i, seq in zip(rows, seqs[:, ids.shape[1]:].tolist()):
                    if tokenizer.eos_token_id in seq:
                        seq = seq[:seq.index(tokenizer.eos_token_id)]
                    out[i] = (prompts[i] + tokenizer.decode(seq)).strip()
        return out

    return api


def ask_teacher(api: BlackBox, config: LMDistillConfig, show: bool = True) -> tuple[list[str], float]:
    """Step 1: ``n_texts`` texts from the black box, prompts in turn. Returns (texts, seconds).

    Two calls per batch: the first samples ``topic_tokens`` tokens at ``temperature`` (which
    subject the text is about: variety), the second continues that text at
    ``answer_temperature`` (0: greedy, the teacher's mode, as Kim & Rush's beam output)."""
    cfg = config
    prompts = [cfg.prompts[i % len(cfg.prompts)] for i in range(cfg.n_texts)]
    texts: list[str] = []
    start = time.perf_counter()
    for b, i in enumerate(progress(range(0, len(prompts), cfg.batch), desc="asking the teacher", disable=not show)):
        seed = cfg.seed * 100003 + b
        batch = prompts[i:i + cfg.batch]
        if cfg.topic_tokens > 0:
            batch = api(batch, cfg.temperature, cfg.topic_tokens, seed)
            texts += api(batch, cfg.answer_temperature, cfg.max_new_tokens - cfg.topic_tokens, seed + 1)
        else:
            texts += api(batch, cfg.temperature, cfg.max_new_tokens, seed)
    texts = [t for t in texts if t]
    if cfg.dedupe:
        texts = list(dict.fromkeys(texts))
    return texts, time.perf_counter() - start


def build_student(texts: Sequence[str], config: LMDistillConfig) -> tuple[nn.Module, object]:
    """Step 2: the student's own byte-level BPE (trained on ``texts``) and a fresh GPT-2 of ``config.arch``."""
    from lfmlab.zoo.world_lm import build_model, build_tokenizer

    tokenizer = build_tokenizer(list(texts), config.vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(dict(config.arch, vocab_size=len(tokenizer)))
    return model, tokenizer


def train_student(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], config: LMDistillConfig,
                  device: torch.device | None = None, show: bool = True,
                  callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Step 3: next-token cross-entropy on the texts, packed into rows of ``row_tokens`` tokens
    (BOS-separated), reshuffled every epoch; AdamW, warm-up then cosine. Returns the mean
    loss per epoch. Trains ``model`` in place (it is the new student) and leaves it in eval mode."""
    cfg = config
    dev = device or device_of(model)
    model.to(dev).train()
    g = torch.Generator().manual_seed(cfg.seed)
    order = list(range(len(texts)))
    rows_per_epoch = len(pack(tokenizer, list(texts), cfg.row_tokens))
    steps = max(cfg.epochs * math.ceil(rows_per_epoch / cfg.batch_size), 1)
    warm = max(1, steps // 20)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    sched = cosine(opt, steps, warm)
    losses = []
    for epoch in progress(range(cfg.epochs), desc="training the student", disable=not show):
        perm = torch.randperm(len(order), generator=g).tolist()                # a new packing each epoch
        rows = pack(tokenizer, [texts[i] for i in perm], cfg.row_tokens).to(dev)  # [R, row_tokens]
        losses.append(train_epoch(model, rows, cfg.batch_size, opt, sched))
        if callback is not None:
            callback(epoch + 1, losses[-1])
    model.eval()
    return losses


def distill_lm(api: BlackBox, config: LMDistillConfig | None = None, device: torch.device | None = None,
               show: bool = True) -> LMDistillResult:
    """Sequence-level KD from a black box: ask, tokenise, train (steps 1-3)."""
    from lfmlab import runtime

    cfg = config or LMDistillConfig()
    texts, ask_s = ask_teacher(api, cfg, show)
    if not texts:
        raise ValueError("the teacher returned no text: check the prompts and max_new_tokens")
    start = time.perf_counter()
    model, tokenizer = build_student(texts, cfg)
    losses = train_student(model, tokenizer, texts, cfg, device or runtime.device(), show)
    return LMDistillResult(model, tokenizer, texts, losses, ask_s, time.perf_counter() - start, cfg.n_texts)
