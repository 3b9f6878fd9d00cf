"""kNN-LM (Khandelwal et al., "Generalization through Memorization: Nearest Neighbor Language
Models", ICLR 2020; survey §2.3.1, ref. [82]).

A frozen LM plus a datastore of (context vector, next token) pairs (:mod:`datastore`). For a
prefix x with context vector q = f(x), retrieve its k nearest entries N and turn their
distances into a distribution over the *values*:

    p_kNN(y | x) ∝ Σ_{(k_i, v_i) ∈ N} 1[y = v_i] · exp(−d(k_i, q) / T)          (eq. 2)

with d the squared L2 distance and T a temperature (the paper uses exp(−d), i.e. T = 1; on
world-lm's scale of distances a T of 10–300, tuned on validation text, works better). Then
interpolate with the LM:

    p(y | x) = λ · p_kNN(y | x) + (1 − λ) · p_LM(y | x)                           (eq. 3)

Everything expensive (the LM's distributions and the k_max nearest neighbours of every scored
position) is computed once into a :class:`KNNCache`; perplexity and accuracy for any λ, any
k ≤ k_max and any T are then cheap re-mixes. With no neighbour at all (an empty store), p is p_LM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from lfmlab import validate
from lfmlab.core import lm
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.retrieval.datastore import Datastore, Neighbours, forward_with_keys, pad


def settings(lam: float | None = None, k: int | None = None, temperature: float | None = None) -> None:
    """The one check of eq. 2–3's settings, shared by every entry point (raises validate.BadValue):
    λ in [0, 1], k a whole number ≥ 1, T a finite number > 0 (T = 0 or T < 0 have no meaning: the
    distance softmax would pick nothing, or the *farthest* neighbour)."""
    if lam is not None:
        validate.number("λ", lam, 0.0, 1.0, fix="0 is the LM alone, 1 the neighbours alone.")
    if k is not None:
        validate.number("k", k, 1, None, integer=True, fix="k counts neighbours: use 1 or more.")
    if temperature is not None:
        validate.number("T", temperature, 0.0, None, lo_open=True,
                        fix="T scales the distances in the softmax: use a positive number, e.g. 10.")


def knn_distribution(neighbours: Neighbours, values: torch.Tensor, vocab_size: int,
                     temperature: float = 1.0) -> torch.Tensor:
    """Eq. 2: p_kNN [Q, V] from Neighbours [Q, k] and the store's values [N] (zero rows: no neighbour)."""
    settings(temperature=temperature)
    q = neighbours.distance.shape[0]
    out = torch.zeros(q, vocab_size, device=neighbours.distance.device)
    if neighbours.distance.shape[1] == 0:
        return out
    w = torch.softmax(-neighbours.distance.float() / temperature, dim=-1).nan_to_num(0.0)   # [Q, k]
    return out.scatter_add_(1, values[neighbours.index].to(out.device), w)


def interpolate(p_lm: torch.Tensor, p_knn: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 3: λ p_kNN + (1 − λ) p_LM, row-wise; rows where p_kNN is empty keep p_LM."""
    settings(lam=lam)
    has = (p_knn.sum(-1, keepdim=True) > 0).to(p_lm.dtype)                            # [Q, 1]
    lam_eff = lam * has
    return lam_eff * p_knn + (1.0 - lam_eff) * p_lm


# ---- the expensive pass, cached ------------------------------------------------------------

@dataclass
class KNNCache:
    """LM scores and k_max neighbours of P scored positions in S sequences (see module doc).

    gold [P]: the true next token; seq [P]: its sequence; lm_logp [P]: log p_LM(gold);
    lm_probs [P, V] (or None, when only perplexities are needed); distance, neighbour_values
    [P, k_max]: the neighbours' squared distances (sorted) and value tokens.
    """

    gold: torch.Tensor
    seq: torch.Tensor
    lm_logp: torch.Tensor
    lm_probs: torch.Tensor | None
    distance: torch.Tensor
    neighbour_values: torch.Tensor
    n_seqs: int
    vocab_size: int
    seconds: float = 0.0

    @property
    def k_max(self) -> int:
        return self.distance.shape[1]

    def _weights(self, k: int, temperature: float) -> torch.Tensor:
        settings(k=k, temperature=temperature)
        k = min(int(k), self.k_max)                                                   # a small store has fewer
        return torch.softmax(-self.distance[:, :k] / temperature, -1).nan_to_num(0.0)   # [P, k]

    def _lam(self, lam: float) -> torch.Tensor:
        settings(lam=lam)
        has = (
            torch.isfinite(self.distance[:, :1]).any(-1)
            if self.k_max
            else torch.zeros_like(self.gold, dtype=torch.bool)
        )
        return lam * has.float()                                                      # [P]: 0 without neighbours

    def knn_gold(self, k: int, temperature: float) -> torch.Tensor:
        """p_kNN(gold) [P]."""
        settings(k=k, temperature=temperature)
        if self.k_max == 0:
            return torch.zeros_like(self.lm_logp)
        w = self._weights(k, temperature)
        hit = (self.neighbour_values[:, :w.shape[1]] == self.gold[:, None]).float()
        return (w * hit).sum(-1)

    def gold_prob(self, lam: float, k: int, temperature: float) -> torch.Tensor:
        """p(gold) [P] under eq. 3."""
        lam_eff = self._lam(lam)
        return lam_eff * self.knn_gold(k, temperature) + (1 - lam_eff) * self.lm_logp.exp()

    def perplexity(self, lam: float, k: int, temperature: float) -> float:
        """exp of the mean negative log-likelihood over all scored tokens."""
        return float(torch.exp(-self.gold_prob(lam, k, temperature).clamp_min(1e-30).log().mean()))

    def probs(self, lam: float, k: int, temperature: float) -> torch.Tensor:
        """The interpolated distributions [P, V] (needs ``lm_probs``)."""
        if self.lm_probs is None:
            raise ValueError("this cache kept only gold-token probabilities; collect it with full=True")
        settings(lam, k, temperature)
        if self.k_max == 0:
            return self.lm_probs
        w = self._weights(k, temperature)
        p_knn = torch.zeros_like(self.lm_probs).scatter_add_(1, self.neighbour_values[:, :w.shape[1]], w)
        lam_eff = self._lam(lam)[:, None]
        return lam_eff * p_knn + (1 - lam_eff) * self.lm_probs

    def exact(self, lam: float, k: int, temperature: float) -> torch.Tensor:
        """Per sequence [S] bool: every scored token is the argmax (= greedy decoding gives the target)."""
        hit = (self.probs(lam, k, temperature).argmax(-1) == self.gold).float()      # [P]
        per_seq = torch.ones(self.n_seqs, device=hit.device)
        return per_seq.scatter_reduce_(0, self.seq, hit, "amin").bool()

    def sequence_logprob(self, lam: float, k: int, temperature: float) -> torch.Tensor:
        """Per sequence [S]: log-probability of all its scored tokens (e.g. a whole object)."""
        lp = self.gold_prob(lam, k, temperature).clamp_min(1e-30).log()
        return torch.zeros(self.n_seqs, device=lp.device).index_add_(0, self.seq, lp)


@torch.no_grad()
def _collect(model: nn.Module, store: Datastore, batches, k_max: int, full: bool) -> KNNCache:
    import time

    start = time.perf_counter()
    golds, seqs, lps, probs, dists, vals = [], [], [], [], [], []
    n_seqs, offset = 0, 0
    for ids, mask, scored in batches:          # scored [B, T]: position t predicts ids[:, t + 1]
        logits, h = forward_with_keys(model, ids, mask, store.layer)                 # [B, T, V], [B, T, D]
        sel = scored[:, :-1]
        gold = ids[:, 1:][sel]                                                        # [p]
        logp = logits[:, :-1][sel].float().log_softmax(-1)                           # [p, V]
        q = h[:, :-1][sel].float()                                                    # [p, D]
        seq = torch.arange(len(ids), device=ids.device)[:, None].expand_as(sel)[sel] + offset
        found = store.search(q, k_max) if len(store) else Neighbours(
            torch.empty(len(q), 0, device=q.device), torch.empty(len(q), 0, dtype=torch.long, device=q.device))
        golds.append(gold); seqs.append(seq)
        lps.append(logp.gather(1, gold[:, None])[:, 0])
        if full:
            probs.append(logp.exp())
        dists.append(found.distance.to(q.device))
        vals.append(store.values[found.index.to(store.device)].to(q.device) if len(store)
                    else torch.empty(len(q), 0, dtype=torch.long, device=q.device))
        offset += len(ids)
        n_seqs = offset
    cat = torch.cat
    return KNNCache(cat(golds), cat(seqs), cat(lps), cat(probs) if full else None, cat(dists), cat(vals),
                    n_seqs, model.config.vocab_size, time.perf_counter() - start)


def collect_pairs(model: nn.Module, tokenizer: Tokenizer, store: Datastore, prompts: Sequence[str],
                  targets: Sequence[str], k_max: int = 32, batch_size: int = 64, full: bool = True) -> KNNCache:
    """Score ``targets`` after ``prompts`` (teacher forcing): one sequence per pair, one scored
    position per target token. ``full`` keeps the LM distributions for top-1 accuracy."""
    dev = device_of(model)

    def batches():
        for s in range(0, len(prompts), batch_size):
            b = lm.pair_batch(tokenizer, list(prompts[s:s + batch_size]), list(targets[s:s + batch_size]), dev)
            scored = torch.zeros_like(b.labels, dtype=torch.bool)
            scored[:, :-1] = b.labels[:, 1:] != -100                                   # predicts a target token
            yield b.input_ids, b.attention_mask, scored

    return _collect(model, store, batches(), k_max, full)


def collect_text(model: nn.Module, tokenizer: Tokenizer, store: Datastore, texts: Sequence[str], k_max: int = 32,
                 batch_size: int = 64, full: bool = False) -> KNNCache:
    """Score every next token of each text (after the BOS): for perplexity on running text."""
    dev = device_of(model)
    tokens = [list(t) for t in tokenizer([t.strip() for t in texts])["input_ids"]]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches():
        for s in range(0, len(tokens), batch_size):
            ids, mask = pad(tokens[s:s + batch_size], pad_id, dev)
            scored = torch.zeros_like(mask, dtype=torch.bool)
            scored[:, :-1] = mask[:, 1:].bool()
            yield ids, mask, scored

    return _collect(model, store, batches(), k_max, full)


# ---- what the notebook reports ------------------------------------------------------------

@dataclass
class FactScores:
    """Scores of (prompt, object) pairs under one setting (λ = 0 is the LM alone).

    perplexity: per object token; object_perplexity: exp(−mean log P(whole object));
    top1: share of objects that greedy decoding produces exactly."""

    lam: float
    k: int
    temperature: float
    perplexity: float
    object_perplexity: float
    top1: float
    n: int


def fact_scores(cache: KNNCache, lam: float, k: int, temperature: float) -> FactScores:
    lp = cache.sequence_logprob(lam, k, temperature)
    return FactScores(lam, k, temperature, cache.perplexity(lam, k, temperature), float(torch.exp(-lp.mean())),
                      float(cache.exact(lam, k, temperature).float().mean()), cache.n_seqs)


@dataclass
class Sweep:
    """Perplexity over λ (at k = k_for_lambda) and over k (at the best λ), for one temperature."""

    temperature: float
    lambdas: list[float]
    ppl_lambda: list[float]
    k_for_lambda: int
    ks: list[int]
    ppl_k: list[float]
    lm_ppl: float
    best_lambda: float = field(init=False)
    best_ppl: float = field(init=False)

    def __post_init__(self) -> None:
        i = min(range(len(self.lambdas)), key=lambda j: self.ppl_lambda[j])
        self.best_lambda, self.best_ppl = self.lambdas[i], self.ppl_lambda[i]

    @property
    def gain(self) -> float:
        """Relative perplexity reduction at the best λ (0.05 = 5% lower than the LM alone)."""
        return 1.0 - self.best_ppl / self.lm_ppl


def sweep(cache: KNNCache, lambdas: Sequence[float], ks: Sequence[int], temperature: float,
          k_for_lambda: int | None = None) -> Sweep:
    k_lam = k_for_lambda or cache.k_max
    ppl_l = [cache.perplexity(l, k_lam, temperature) for l in lambdas]
    best = lambdas[min(range(len(lambdas)), key=lambda j: ppl_l[j])]
    ppl_k = [cache.perplexity(best, k, temperature) for k in ks]
    return Sweep(temperature, list(lambdas), ppl_l, k_lam, list(ks), ppl_k, cache.perplexity(0.0, 1, temperature))


def tune(cache: KNNCache, lambdas: Sequence[float], ks: Sequence[int],
         temperatures: Sequence[float]) -> tuple[float, int, float]:
    """(λ, k, T) with the lowest perplexity on ``cache`` (a validation set: report on another)."""
    grid = [(l, k, t) for l in lambdas for k in ks for t in temperatures]
    return min(grid, key=lambda g: cache.perplexity(*g))


# ---- one prompt, for panels ---------------------------------------------------------------

@dataclass
class Lookup:
    """The expensive part for one prompt: p_LM [V] and the k_max nearest entries (rows into the store)."""

    prompt: str
    p_lm: torch.Tensor
    neighbours: Neighbours          # [1, k_max]
    values: torch.Tensor            # [k_max] the neighbours' next tokens

    def mix(self, lam: float, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(p_kNN [V], p [V]) for these settings: cheap, no forward pass and no search."""
        settings(lam, k, temperature)
        k = min(int(k), self.values.numel())
        first = self.neighbours.first(k)
        p_knn = torch.zeros_like(self.p_lm)
        if k:
            w = torch.softmax(-first.distance[0] / temperature, -1).nan_to_num(0.0)
            p_knn = p_knn.scatter_add_(0, self.values[:k], w)
        return p_knn, interpolate(self.p_lm[None], p_knn[None], lam)[0]


def lookup(model: nn.Module, tokenizer: Tokenizer, store: Datastore, prompt: str, k_max: int = 32) -> Lookup:
    """p_LM and the k_max neighbours of the context vector at the prompt's last token."""
    return lookup_ids(model, store, lm.encode_prompt(tokenizer, prompt), k_max, prompt)


@torch.no_grad()
def lookup_ids(model: nn.Module, store: Datastore, ids: Sequence[int], k_max: int = 32, prompt: str = "") -> Lookup:
    dev = device_of(model)
    x = torch.tensor([list(ids)], device=dev)
    logits, h = forward_with_keys(model, x, torch.ones_like(x), store.layer)        # [1, T, V], [1, T, D]
    if len(store):
        found = store.search(h[:, -1].float(), k_max)                                # [1, k]
        values = store.values[found.index[0].to(store.device)].to(dev)
    else:
        found = Neighbours(torch.empty(1, 0, device=dev), torch.empty(1, 0, dtype=torch.long, device=dev))
        values = torch.empty(0, dtype=torch.long, device=dev)
    return Lookup(prompt, logits[0, -1].float().softmax(-1), found, values)


def generate(model: nn.Module, tokenizer: Tokenizer, store: Datastore, prompt: str, lam: float, k: int,
             temperature: float, max_new_tokens: int = 8, stop_at: str = ".") -> str:
    """Greedy decoding under eq. 3 (one forward pass and one search per new token)."""
    return lm.decode_greedily(tokenizer, lm.encode_prompt(tokenizer, prompt),
                              lambda ids: lookup_ids(model, store, ids, k).mix(lam, k, temperature)[1],
                              lm.context_limit(model), max_new_tokens, stop_at)


# ---- knowledge update without training ------------------------------------------------------

@dataclass
class KnowledgeUpdate:
    """Fact scores before, with and after removing new documents in the datastore (λ = 0: the LM alone).

    ``restored``: the store's entries are bit-identical to those before the addition."""

    lm_alone: FactScores
    before: FactScores
    added: FactScores
    removed: FactScores
    paraphrase_lm: FactScores | None
    paraphrase_added: FactScores | None
    n_entries: int
    restored: bool


def knowledge_update(model: nn.Module, tokenizer: Tokenizer, store: Datastore, documents: Sequence[str],
                     prompts: Sequence[str], objects: Sequence[str], lam: float, k: int, temperature: float,
                     paraphrase_prompts: Sequence[str] = (), paraphrase_objects: Sequence[str] = (),
                     k_max: int | None = None) -> KnowledgeUpdate:
    """Put ``documents`` into the store, score (prompt, object) pairs, take them out again, score again.

    The model is never touched; the store is the same on return as on entry (entries removed in a
    ``finally``). ``paraphrase_*``: pairs in phrasings absent from the store (generalisation)."""
    k_max = k_max or k
    keys0 = store.keys.clone()
    base = collect_pairs(model, tokenizer, store, prompts, objects, k_max)
    para = bool(paraphrase_prompts)
    para_base = collect_pairs(model, tokenizer, store, paraphrase_prompts, paraphrase_objects, k_max) if para else None
    ids = store.add(model, tokenizer, documents)
    try:
        n_entries = int(torch.isin(store.doc, torch.tensor(ids, device=store.device)).sum())
        added = collect_pairs(model, tokenizer, store, prompts, objects, k_max)
        para_added = (
            collect_pairs(model, tokenizer, store, paraphrase_prompts, paraphrase_objects, k_max) if para else None
        )
    finally:
        store.remove(ids)
    removed = collect_pairs(model, tokenizer, store, prompts, objects, k_max)
    restored = store.keys.shape == keys0.shape and bool(torch.equal(store.keys, keys0))
    return KnowledgeUpdate(
        lm_alone=fact_scores(base, 0.0, k, temperature), before=fact_scores(base, lam, k, temperature),
        added=fact_scores(added, lam, k, temperature), removed=fact_scores(removed, lam, k, temperature),
        paraphrase_lm=fact_scores(para_base, 0.0, k, temperature) if para else None,
        paraphrase_added=fact_scores(para_added, lam, k, temperature) if para else None,
        n_entries=n_entries, restored=restored)
