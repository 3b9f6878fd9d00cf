"""Causal-LM helpers shared by every text method: encode (prompt, target) pairs, score them,
look at the next-token distribution.

Conventions, used everywhere in lfmlab:

* a *prompt* ends just before the answer ("The capital of Peru is"); a *target* is the answer
  without its leading space ("Lima"). The target is encoded as the continuation " Lima", so
  multi-token targets are handled exactly (the byte-level BPE never merges across a space);
* prompts are encoded with the tokenizer's special tokens (world-lm adds a BOS), targets without;
* batches are right-padded; under causal attention padding on the right never changes the
  logits of real positions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab import validate
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer


def right_pad(sequences, pad_id: int = 0, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists: (input_ids [B, T], attention_mask [B, T]). Under causal
    attention, padding on the right never changes the real positions."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return (ids.to(device), mask.to(device)) if device is not None else (ids, mask)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt (with the tokenizer's special tokens). Raises on an empty prompt."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("The prompt is empty: type some text, e.g. 'The capital of Peru is'.")
    validate.text("prompt", prompt)                     # no control characters
    return list(tokenizer(prompt.rstrip())["input_ids"])


def encode_target(tokenizer: Tokenizer, target: str) -> list[int]:
    """Token ids of the continuation ``" " + target``. Raises when the target does not tokenise."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError("The target is empty: give the answer text, e.g. 'Lima'.")
    validate.text("target", target)                     # no control characters
    ids = list(tokenizer(" " + target.strip(), add_special_tokens=False)["input_ids"])
    unk = getattr(tokenizer, "unk_token_id", None)
    if not ids or (unk is not None and unk in ids):
        raise ValueError(f"The target {target!r} does not tokenise cleanly with this tokenizer "
                         f"(got {ids}); use plain text the tokenizer can encode.")
    return ids


@dataclass
class PairBatch:
    """Right-padded (prompt + target) sequences.

    input_ids, attention_mask: [B, T]; labels: [B, T] with the target token ids at the target
    positions and -100 elsewhere (the transformers convention, so ``model(..., labels=labels)``
    gives the mean target-token loss). ``prompt_len`` [B]: where each target starts.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_len: torch.Tensor

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels,
                                                   self.prompt_len)))


def pair_batch(tokenizer: Tokenizer, prompts: list[str], targets: list[str],
               device: torch.device | None = None) -> PairBatch:
    """Encode and right-pad ``prompts[i] + " " + targets[i]`` for teacher-forced scoring/training."""
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets")
    seqs, starts, tgts = [], [], []
    for p, t in zip(prompts, targets):
        pid, tid = encode_prompt(tokenizer, p), encode_target(tokenizer, t)
        seqs.append(pid + tid)
        starts.append(len(pid))
        tgts.append(tid)
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for i, (s, start, tid) in enumerate(zip(seqs, starts, tgts)):
        input_ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        labels[i, start:start + len(tid)] = torch.tensor(tid)
    batch = PairBatch(input_ids, mask, labels, torch.tensor(starts))
    return batch.to(device) if device is not None else batch


@dataclass
class TokenLogprobs:
    """Teacher-forced log-probabilities of the target tokens of a batch, position t predicting
    labels[:, t + 1]: ``logp`` [B, T-1] (0 where no target), ``is_target`` [B, T-1], ``top`` [B, T-1]
    (the argmax token), ``labels`` [B, T-1] (the shifted labels, -100 where no target)."""

    logp: torch.Tensor
    is_target: torch.Tensor
    top: torch.Tensor
    labels: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """Σ_t log p(y_t | y_<t, x) per sequence [B] (ROME's and EasyEdit's metrics; not length-normalised)."""
        return self.logp.sum(-1)

    @property
    def exact(self) -> torch.Tensor:
        """[B] bool: every target token is the argmax, i.e. greedy decoding produces the whole target."""
        return ((self.top == self.labels) | ~self.is_target).all(-1)

    @property
    def token_accuracy(self) -> torch.Tensor:
        """[B] share of target tokens that are the argmax (EasyEdit's token accuracy)."""
        return ((self.top == self.labels) & self.is_target).sum(-1) / self.is_target.sum(-1)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> TokenLogprobs:
    """The one target log-probability computation of lfmlab, from logits [B, T, V] and labels [B, T]
    (-100 where a position is not a target; a causal LM's position t predicts token t + 1)."""
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    is_target = shift_labels != -100
    safe = shift_labels.clamp_min(0)
    logp = F.log_softmax(shift_logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1) * is_target
    return TokenLogprobs(logp, is_target, shift_logits.argmax(-1), shift_labels)


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence target log-probability and exact match from logits [B, T, V], labels [B, T].

    Returns (logprob_sum [B], exact [B] bool): exact means every target token is the argmax
    under teacher forcing, i.e. greedy decoding would produce the whole target.
    """
    tok = token_logprobs(logits, labels)
    return tok.total, tok.exact


@dataclass
class Scores:
    """Scores of N (prompt, target) pairs: total log-prob, target length, greedy exact match."""

    logprob: torch.Tensor  # [N]
    n_tokens: torch.Tensor  # [N]
    exact: torch.Tensor  # [N] bool

    @property
    def prob(self) -> torch.Tensor:
        return self.logprob.exp()


@torch.no_grad()
def score(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], targets: list[str],
          batch_size: int = 128) -> Scores:
    """Teacher-forced scores of ``targets`` after ``prompts`` (on the model's device, CPU result)."""
    device = device_of(model)
    out_lp, out_n, out_ex = [], [], []
    for i in range(0, len(prompts), batch_size):
        b = pair_batch(tokenizer, prompts[i:i + batch_size], targets[i:i + batch_size], device)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        lp, ex = target_logprobs(logits, b.labels)
        out_lp.append(lp.cpu())
        out_ex.append(ex.cpu())
        out_n.append((b.labels != -100).sum(-1).cpu())
    if not out_lp:
        empty = torch.empty(0)
        return Scores(empty, empty.long(), empty.bool())
    return Scores(torch.cat(out_lp), torch.cat(out_n), torch.cat(out_ex))


def exact_match(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], targets: list[str],
                batch_size: int = 128) -> float:
    """Share of pairs whose whole target is what greedy decoding would produce."""
    if not prompts:
        return float("nan")
    return score(model, tokenizer, prompts, targets, batch_size).exact.float().mean().item()


@torch.no_grad()
def next_token_probs(model: nn.Module, tokenizer: Tokenizer, prompts: list[str]) -> torch.Tensor:
    """Next-token distributions [N, V] after each prompt (right-padded batch)."""
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    device = device_of(model)
    input_ids, mask = right_pad(ids, device=device)
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    last = torch.tensor([len(s) - 1 for s in ids], device=device)
    return logits[torch.arange(len(ids), device=device), last].float().softmax(-1).cpu()


def top_k(model: nn.Module, tokenizer: Tokenizer, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The k most likely next tokens after ``prompt`` as (token text, probability)."""
    if not 1 <= int(k) <= len(tokenizer):
        raise ValueError(f"k must be between 1 and the vocabulary size {len(tokenizer)}, got {k}.")
    fits(model, len(encode_prompt(tokenizer, prompt)))
    probs = next_token_probs(model, tokenizer, [prompt])[0]
    values, idx = probs.topk(int(k))
    return [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, idx)]


def decode_greedily(tokenizer: Tokenizer, ids: list[int], scores: Callable[[list[int]], torch.Tensor], limit: int,
                    max_new_tokens: int = 8, stop_at: str = ".") -> str:
    """Greedy decoding with any next-token scorer ``scores(ids) -> [V]`` (logits or probabilities):
    stops after ``stop_at``, the end-of-text token, ``max_new_tokens`` or the context ``limit``."""
    fits(limit, len(ids))
    new: list[int] = []
    for _ in range(max_new_tokens):
        if len(ids) + len(new) >= limit:
            break
        nxt = int(scores(ids + new).argmax())
        if nxt == tokenizer.eos_token_id:
            break
        new.append(nxt)
        if stop_at and stop_at in tokenizer.decode([nxt]):
            break
    return tokenizer.decode(new)


def context_limit(model: nn.Module) -> int:
    """The number of positions the model can attend to."""
    return getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 2048)


def fits(limit: int | nn.Module, n_tokens: int, field: str = "prompt", room: int = 1) -> None:
    """Raise ``validate.BadValue`` when ``n_tokens`` (+ ``room`` to predict into) exceed the context."""
    limit = limit if isinstance(limit, int) else context_limit(limit)
    if n_tokens + room > limit:
        raise validate.BadValue(field, f"<{n_tokens} tokens>", f"{n_tokens} tokens long, and the model reads "
                                f"at most {limit} (with {room} left to predict)",
                                f"Shorten it to at most {limit - room} tokens.")


def cache_kwarg(model: nn.Module) -> str:
    """The keyword under which ``model.forward`` takes a key/value cache: ``cache`` in transformers
    5.24 and later, ``past_key_values`` before (deprecated there, removed in 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output):
    """The key/value cache a forward pass with ``use_cache=True`` returned (either name)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def greedy(model: nn.Module, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 8,
           stop_at: str = ".") -> str:
    """Greedy continuation of ``prompt`` (stops after ``stop_at`` or the end-of-text token)."""
    device = device_of(model)

    def scores(ids: list[int]) -> torch.Tensor:
        seq = torch.tensor([ids], device=device)
        return model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1]

    return decode_greedily(tokenizer, encode_prompt(tokenizer, prompt), scores, context_limit(model),
                           max_new_tokens, stop_at)


class SplitBatch:
    """Right-padded rows ``ids`` [B, T] to be run many times, where only the positions from
    ``split[i]`` on change between runs (e.g. ROME's δ added to a hidden state at ``split[i]``).

    Under causal attention a position never sees later ones, so the part of each row before
    ``split[i]`` gives the same keys and values on every run: they are computed once (a
    left-padded batch, kept as a key/value cache) and :meth:`logits` runs only the rest of each
    row (a right-padded batch of width S) on top of them. Its logits [B, S, V] are those of the
    full forward pass at positions ``split[i] + s`` (tested to float rounding), for ~S/T of the
    work. ``positions`` [B, S] gives each suffix slot's position in its row."""

    def __init__(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, split: torch.Tensor):
        B, T = ids.shape
        device = ids.device
        lengths, split = mask.sum(1), split.to(device)
        P, S = int(split.max()), int((lengths - split).max())
        src = torch.arange(P, device=device)[None] - (P - split)[:, None]     # [B, P]: left-padded
        self.prefix_mask = (src >= 0).long()
        self.positions = split[:, None] + torch.arange(S, device=device)[None]  # [B, S]
        self.suffix_mask = (self.positions < lengths[:, None]).long()
        self.ids = ids.gather(1, self.positions.clamp_max(T - 1)) * self.suffix_mask
        self.model, self.key, self.kv = model, cache_kwarg(model), None
        if P:
            prefix = ids.gather(1, src.clamp_min(0)) * self.prefix_mask
            with torch.no_grad():
                out = model(input_ids=prefix, attention_mask=self.prefix_mask, use_cache=True,
                            position_ids=(self.prefix_mask.cumsum(1) - 1).clamp_min(0))
            # a row with nothing before its split is all padding there: keep its (unread) slots finite
            self.kv = [(torch.nan_to_num(layer.keys), torch.nan_to_num(layer.values))
                       for layer in output_cache(out).layers]

    def logits(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [b, S, V] of the suffixes of ``rows`` (a bool mask or indices; default all)."""
        sel = slice(None) if rows is None else rows
        mask = torch.cat([self.prefix_mask[sel], self.suffix_mask[sel]], 1)
        extra = {}
        if self.kv is not None:
            from transformers import DynamicCache

            extra[self.key] = DynamicCache([(k[sel], v[sel]) for k, v in self.kv])
        return self.model(input_ids=self.ids[sel], attention_mask=mask, position_ids=self.positions[sel],
                          use_cache=False, **extra).logits
