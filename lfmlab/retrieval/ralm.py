"""In-Context RALM: retrieval-augmented language modelling with a frozen LM (Ram, Levine, Dalmedigos,
Muhlgay, Shashua, Leyton-Brown, Shoham, TACL 2023; survey §2.3.2).

A text x = x_1 … x_n is scored block by block. Every s tokens (the *stride*) a retriever is asked
with the last ℓ tokens of the prefix (the *query length*), and the passage it returns is put
before the prefix; the next s tokens are then predicted with that passage in view (the paper's
eq. 2–3, with one passage per retrieval):

    p(x) = Π_{j=0}^{n_s − 1}  Π_{i=1}^{s}  p_θ( x_{s·j+i} | [R_C(q_j) ; x_{<s·j+i}] ),
    q_j = x_{s·j−ℓ+1 … s·j}

Nothing is trained: the LM and the retriever are only read. A small stride retrieves more
often (n/s retrievals per text), which costs retrieval calls and forward passes but keeps the
passage about what the text says *now*; a long query holds more of the context and more noise.

How it runs here: every block of every text is an independent sequence (its passage, then its
prefix), so all retrievals are made in one call and all blocks are scored in right-padded
batches, never one token at a time. A prefix longer than the LM's window keeps its last tokens
(the passage always stays). The first block has no prefix to ask with and is scored without a
passage. Simplifications, stated: one passage per retrieval (the paper's main setting); the
retriever is BM25 by default (the paper's choice) or any :class:`~lfmlab.retrieval.rag.Retriever`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.lm import right_pad
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.retrieval.rag import Retriever

__all__ = ["RALMConfig", "RALMResult", "perplexity", "answer_mask", "perplexity_on"]


@dataclass
class RALMConfig:
    stride: int = 4          # s: tokens between retrievals
    query_tokens: int = 8    # ℓ: prefix tokens the retriever is asked with
    batch_size: int = 128

    def __post_init__(self):
        for name, low, high in (("stride", 1, 1024), ("query_tokens", 1, 1024), ("batch_size", 1, 65536)):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
                raise ValueError(f"{name} = {value!r}: a whole number between {low} and {high}")


@dataclass
class RALMResult:
    """Summed negative log-likelihood over ``tokens`` scored tokens, the number of retrievals and
    forward sequences, the seconds it took, and per text the passages retrieved (index, or -1)."""

    nll: float
    tokens: int
    retrievals: int
    sequences: int
    seconds: float
    passages: list[list[int]]
    token_nll: list[torch.Tensor]        # per text: the NLL of each of its tokens after the first

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / max(1, self.tokens))

    @property
    def retrievals_per_token(self) -> float:
        return self.retrievals / max(1, self.tokens)


def _encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        raise ValueError("no texts to score: give at least one non-empty text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"text {bad[0]} is empty: every text needs at least two tokens")
    return [list(tokenizer(t)["input_ids"]) for t in texts]


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], retriever: Retriever | None = None,
               config: RALMConfig | None = None) -> RALMResult:
    """Score ``texts`` with In-Context RALM (``retriever=None``: the LM alone, the same blocks
    without passages). Every text starts with the tokenizer's BOS, which is never scored."""
    cfg = config or RALMConfig()
    start_time = time.perf_counter()
    ids = _encode(tokenizer, texts)
    window = int(getattr(model.config, "n_positions", None) or model.config.max_position_embeddings)
    # the blocks: (text, first predicted position, end), the query for each block that has a prefix
    blocks = [(t, b, min(b + cfg.stride, len(row)))
              for t, row in enumerate(ids) for b in range(1, len(row), cfg.stride)]
    queries = [(k, tokenizer.decode(ids[t][max(1, b - cfg.query_tokens):b], skip_special_tokens=True).strip())
               for k, (t, b, _) in enumerate(blocks)]
    queries = [(k, q) for k, q in queries if q]
    found = {}
    if retriever is not None and queries:
        hits = retriever.search([q for _, q in queries], 1).index[:, 0].tolist()
        found = {k: j for (k, _), j in zip(queries, hits)}
    passage_ids = {j: list(tokenizer(retriever.passages[j])["input_ids"]) for j in set(found.values())}
    seqs, spans = [], []                         # spans: where the block's predictions sit in its sequence
    for k, (t, b, e) in enumerate(blocks):
        row = ids[t]
        head = passage_ids[found[k]] if k in found else row[:1]                   # the passage (BOS first) or BOS
        prefix = row[1:e]                                                         # x_1 … x_{e-1}
        keep = max(0, min(len(prefix), window - len(head)))
        if keep < e - b:
            raise ValueError(f"a passage of {len(head)} tokens and a stride of {cfg.stride} do not fit in the "
                             f"LM's window of {window} tokens: choose a shorter stride")
        seq = head + prefix[len(prefix) - keep:]
        n_pred = e - b
        seqs.append(seq)
        spans.append((len(seq) - n_pred - 1, n_pred, row[b:e]))
    device = device_of(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll_blocks: list[torch.Tensor] = []
    for i in range(0, len(seqs), cfg.batch_size):
        input_ids, mask = right_pad(seqs[i:i + cfg.batch_size], pad, device)
        logp = F.log_softmax(model(input_ids=input_ids, attention_mask=mask).logits.float(), -1)
        for r, (first, n_pred, gold) in enumerate(spans[i:i + cfg.batch_size]):
            rows = logp[r, first:first + n_pred]                                  # predicts gold[0 … n_pred-1]
            nll_blocks.append(-rows.gather(1, torch.tensor(gold, device=device)[:, None])[:, 0].cpu())
    token_nll = [[] for _ in ids]
    for (t, _, _), nll in zip(blocks, nll_blocks):
        token_nll[t].append(nll)
    token_nll = [torch.cat(parts) for parts in token_nll]
    total = float(sum(float(x.sum()) for x in token_nll))
    passages = [[found.get(k, -1) for k, (t2, _, _) in enumerate(blocks) if t2 == t] for t in range(len(ids))]
    return RALMResult(total, sum(len(x) for x in token_nll), len(found), len(seqs),
                      time.perf_counter() - start_time, passages, token_nll)


def answer_mask(tokenizer: Tokenizer, text: str, answer: str) -> torch.Tensor:
    """Which of ``text``'s scored tokens (all but its BOS) spell ``answer``: its last occurrence
    as whole tokens [n − 1] bool (all False when the answer is not tokenised the same in the text)."""
    ids = list(tokenizer(text)["input_ids"])[1:]
    ans = list(tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"])
    mask = torch.zeros(len(ids), dtype=torch.bool)
    for i in range(len(ids) - len(ans), -1, -1):
        if ids[i:i + len(ans)] == ans:
            mask[i:i + len(ans)] = True
            break
    return mask


def perplexity_on(result: RALMResult, masks: Sequence[torch.Tensor]) -> float:
    """Perplexity over the tokens each mask selects (e.g. :func:`answer_mask`: the facts' objects)."""
    nll = sum(float(n[m].sum()) for n, m in zip(result.token_nll, masks))
    count = sum(int(m.sum()) for m in masks)
    return math.exp(nll / max(1, count))
