"""Retrieval-augmented generation with a *frozen* LM (survey §2.3.2).

A retriever picks passages from a knowledge base for a query; the LM reads them. Nothing is
trained: the retriever is the pretrained MiniLM sentence encoder (or a lexical baseline), the LM
is world-lm as it ships.

Retrievers (score s(d, x) of passage d for query x, top-k by score):

* :class:`DenseRetriever` — s = cos(E(d), E(x)) with E the MiniLM encoder (mean pooling, L2
  normalised; DPR/Contriever-style dual encoder);
* :class:`BM25Retriever` — the lexical baseline (Robertson & Zaragoza 2009):

      s(d, x) = Σ_{w ∈ x} idf(w) · tf(w, d) (k1 + 1) / (tf(w, d) + k1 (1 − b + b |d| / avgdl))
      idf(w)  = log(1 + (N − n_w + 0.5) / (n_w + 0.5))

Two ways for the LM to use the top-k passages D = (d_1 … d_k):

* **prepend** (input augmentation, as in-context retrieval does): p(y | x) = p_LM(y | d_1 ⊕ … ⊕
  d_k ⊕ x) — one forward pass, passages in rank order. This is *not* REALM or RAG: both
  marginalise over the retrieved documents, p(y | x) = Σ_d p(d | x) p(y | d, x) (REALM eq. 1,
  RAG-Sequence eq. 1) and train the retriever and generator; the "ensemble" mode below is that
  marginalisation with a frozen retriever and generator;
* **ensemble** (REPLUG, Shi et al. 2023, §3): one pass per passage, mixed by the retriever,

      p(y | x) = Σ_{d ∈ D} λ(d, x) · p_LM(y | d ⊕ x),   λ(d, x) = softmax_d(s(d, x) / τ).

The end task: complete a fact prompt ("The capital of Belgium is") with the exact object under
greedy decoding (teacher forcing: every object token must be the argmax).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab.core import lm
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer

MODES = ("none", "prepend", "ensemble")
_WORD = re.compile(r"[a-z0-9]+")
# function words dropped by the lexical retriever (as an English analyser in Lucene/Elasticsearch does)
STOPWORDS = frozenset("a an and are as at be by do does for from has have how in is it its of on or s that the "
                      "this to was what which who with".split())


def words(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-cased alphanumeric words without stop words: the lexical retriever's terms."""
    return [w for w in _WORD.findall(text.lower()) if w not in stopwords]


@dataclass
class Retrieved:
    """Top-k passages of Q queries, best first: ``score`` [Q, k] and ``index`` [Q, k] rows into the passages."""

    score: torch.Tensor
    index: torch.Tensor


class Retriever:
    """Base class: ``fit(passages)`` then ``search(queries, k)``; subclasses define :meth:`scores`."""

    name = "retriever"

    def __init__(self) -> None:
        self.passages: list[str] = []

    def fit(self, passages: Sequence[str]) -> "Retriever":
        raise NotImplementedError

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        """s(d, x) for every query and passage: [Q, N]."""
        raise NotImplementedError

    def search(self, queries: Sequence[str], k: int) -> Retrieved:
        if not self.passages:
            raise ValueError("fit() the retriever on a non-empty list of passages first")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        s = self.scores(list(queries))                                              # [Q, N]
        top = s.topk(min(int(k), s.shape[1]), dim=1)                                 # sorted, best first
        return Retrieved(top.values, top.indices)


class DenseRetriever(Retriever):
    """Cosine similarity of MiniLM sentence embeddings (``zoo.load("minilm")``)."""

    name = "dense (minilm)"

    def __init__(self, encoder: nn.Module, tokenizer: Tokenizer, batch_size: int = 128):
        super().__init__()
        self.encoder, self.tokenizer, self.batch_size = encoder, tokenizer, batch_size
        self.embeddings: torch.Tensor | None = None                                  # [N, 384]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        from lfmlab.zoo.minilm import embed

        return embed(self.encoder, self.tokenizer, texts, self.batch_size)

    def fit(self, passages: Sequence[str]) -> "DenseRetriever":
        self.passages = list(passages)
        self.embeddings = self._embed(self.passages)
        return self

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        q = self._embed(list(queries))                                               # [Q, 384], unit norm
        return q @ self.embeddings.T                                                 # [Q, N] cosine


class RandomRetriever(Retriever):
    """The null retriever: it ignores the query and returns random passages (seeded).

    Every retrieval claim is measured against it: a retriever that does not beat random passages
    has learned nothing about the question."""

    name = "random passages"

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def fit(self, passages: Sequence[str]) -> "RandomRetriever":
        self.passages = list(passages)
        return self

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.rand(len(queries), len(self.passages), generator=g)             # [Q, N]


def bm25_weights(tf: torch.Tensor, k1: float = 1.2, b: float = 0.75) -> torch.Tensor:
    """Okapi BM25's document-term weights (Robertson & Zaragoza 2009) from term counts tf [N, W]:
    idf(w) · tf (k1 + 1) / (tf + k1 (1 − b + b |d| / avgdl)), idf(w) = ln(1 + (N − n_w + 0.5) /
    (n_w + 0.5)). A query's score for a document is the sum of its terms' weights."""
    length = tf.sum(1, keepdim=True)                                                 # |d| [N, 1]
    n_w = (tf > 0).sum(0).float()                                                    # [W] document frequency
    idf = torch.log1p((tf.shape[0] - n_w + 0.5) / (n_w + 0.5))                       # [W]
    norm = k1 * (1 - b + b * length / length.mean().clamp_min(1e-9))
    return idf * tf * (k1 + 1) / (tf + norm)                                         # [N, W]


class BM25Retriever(Retriever):
    """Okapi BM25 over lower-cased words; the document-term weights are one dense [N, W] tensor,
    so scoring a batch of queries is a single matrix product."""

    name = "lexical (BM25)"

    def __init__(self, k1: float = 1.2, b: float = 0.75, device: torch.device | str | None = None):
        super().__init__()
        self.k1, self.b, self.device = k1, b, device
        self.vocab: dict[str, int] = {}
        self.weights: torch.Tensor | None = None                                     # [N, W]

    def fit(self, passages: Sequence[str]) -> "BM25Retriever":
        from lfmlab import runtime

        self.passages = list(passages)
        docs = [Counter(words(p)) for p in self.passages]
        self.vocab = {w: i for i, w in enumerate(sorted({w for d in docs for w in d}))}
        dev = runtime.device(self.device) if self.device is not None else runtime.device()
        tf = torch.zeros(len(docs), len(self.vocab), device=dev)                    # [N, W] term counts
        rows = [i for i, d in enumerate(docs) for _ in d]
        cols = [self.vocab[w] for d in docs for w in d]
        vals = [c for d in docs for c in d.values()]
        tf[rows, cols] = torch.tensor(vals, dtype=torch.float, device=dev)
        self.weights = bm25_weights(tf, self.k1, self.b)                             # [N, W]
        return self

    def scores(self, queries: Sequence[str]) -> torch.Tensor:
        q = torch.zeros(len(queries), len(self.vocab), device=self.weights.device)   # [Q, W] query term counts
        for i, text in enumerate(queries):
            for w in words(text):
                if w in self.vocab:
                    q[i, self.vocab[w]] += 1.0
        return q @ self.weights.T                                                    # [Q, N]


def recall_at_k(retrieved: Retrieved, gold: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Share of queries whose gold passage is among the top k, for each k (≤ the k searched)."""
    g = torch.as_tensor(list(gold), device=retrieved.index.device)[:, None]        # [Q, 1]
    hit = retrieved.index == g                                                       # [Q, K]
    return {k: float(hit[:, :k].any(1).float().mean()) for k in ks if k <= hit.shape[1]}


def context(passages: Sequence[str], prompt: str) -> str:
    """Input augmentation: d_1 … d_k (rank order, best first) then the prompt."""
    return " ".join([*(p.strip() for p in passages), prompt])


@dataclass
class RAGResult:
    """End-task scores of one (retriever, mode, k) setting on Q (prompt, answer) pairs.

    exact [Q]: greedy decoding gives the whole answer; logprob [Q]: log p(answer | x);
    retrieved: what the retriever returned (None for mode "none")."""

    mode: str
    retriever: str
    k: int
    exact: torch.Tensor
    logprob: torch.Tensor
    retrieved: Retrieved | None

    @property
    def accuracy(self) -> float:
        return float(self.exact.float().mean())


@torch.no_grad()
def ensemble_scores(model: nn.Module, tokenizer: Tokenizer, passages: Sequence[Sequence[str]], weights: torch.Tensor,
                    prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The REPLUG ensemble under teacher forcing: mix p_LM(· | d_j ⊕ x) over j with ``weights`` [Q, k].

    Returns (exact [Q] bool, logprob [Q]) of each answer under the mixture."""
    q, k = weights.shape
    dev = device_of(model)
    flat_in = [context([passages[i][j]], prompts[i]) for i in range(q) for j in range(k)]   # Q·k inputs
    flat_ans = [answers[i] for i in range(q) for _ in range(k)]
    exact, logprob = [], []
    step = max(1, batch_size // k) * k                                               # whole queries per batch
    for s in range(0, len(flat_in), step):
        b = lm.pair_batch(tokenizer, flat_in[s:s + step], flat_ans[s:s + step], dev)
        probs = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.float().softmax(-1)
        # the answer token at t is predicted at t − 1; answers have the same length within a query
        n_ans = (b.labels != -100).sum(1)                                            # [B]
        width = int(n_ans.max())
        offs = torch.arange(width, device=dev)                                       # [L]
        pos = (b.prompt_len.to(dev)[:, None] - 1 + offs).clamp_max(b.input_ids.shape[1] - 2)  # [B, L]
        valid = offs[None] < n_ans[:, None]                                          # [B, L]
        p = probs[torch.arange(len(pos), device=dev)[:, None], pos]                  # [B, L, V]
        gold = b.input_ids.gather(1, (pos + 1))                                      # [B, L]
        nq = len(pos) // k
        w = weights[s // k:s // k + nq].to(dev).reshape(nq * k, 1, 1)                 # [B, 1, 1]
        mix = (w * p).reshape(nq, k, width, -1).sum(1)                               # [nq, L, V]
        gold, valid = gold.reshape(nq, k, width)[:, 0], valid.reshape(nq, k, width)[:, 0]
        hit = (mix.argmax(-1) == gold) | ~valid                                      # [nq, L]
        lp = mix.gather(-1, gold[..., None])[..., 0].clamp_min(1e-30).log() * valid
        exact.append(hit.all(1).cpu())
        logprob.append(lp.sum(1).cpu())
    return torch.cat(exact), torch.cat(logprob)


def answer(model: nn.Module, tokenizer: Tokenizer, prompts: Sequence[str], answers: Sequence[str],
           retriever: Retriever | None = None, queries: Sequence[str] | None = None, k: int = 1,
           mode: str = "prepend", temperature: float = 0.1, batch_size: int = 64) -> RAGResult:
    """Score ``answers`` after ``prompts`` with k passages retrieved for ``queries`` (default: the prompts).

    ``mode``: "none" (the LM alone), "prepend" or "ensemble" (see the module doc); ``temperature``
    is REPLUG's τ for the passage weights. The LM and the retriever are only read.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    prompts, answers = list(prompts), list(answers)
    if mode == "none":
        s = lm.score(model, tokenizer, prompts, answers, batch_size)
        return RAGResult(mode, "none", 0, s.exact, s.logprob, None)
    if retriever is None:
        raise ValueError(f"mode {mode!r} needs a retriever")
    found = retriever.search(list(queries) if queries is not None else prompts, k)
    docs = [[retriever.passages[j] for j in row] for row in found.index.tolist()]
    if mode == "prepend":
        s = lm.score(model, tokenizer, [context(d, p) for d, p in zip(docs, prompts)], answers, batch_size)
        return RAGResult(mode, retriever.name, k, s.exact, s.logprob, found)
    if temperature <= 0:
        raise ValueError(f"the temperature τ must be positive, got {temperature}")
    weights = torch.softmax(found.score.float() / temperature, dim=1)               # λ(d, x) [Q, k]
    exact, logprob = ensemble_scores(model, tokenizer, docs, weights, prompts, answers, batch_size)
    return RAGResult(mode, retriever.name, k, exact, logprob, found)


def perplexity(result: RAGResult, n_tokens: torch.Tensor) -> float:
    """Per-token perplexity of the answers: exp(−Σ log p / Σ tokens)."""
    return math.exp(-float(result.logprob.sum()) / float(n_tokens.sum()))
