"""The arena's database-augmentation contestants (survey §2.3): the model is untouched, an
update is stored text.

* :class:`RAGContestant`: the fact's sentence is stored; at inference the best-matching stored
  sentence (BM25, at least one shared content word) is read before the prompt, through the same
  read-after-context pass IKE uses;
* :class:`KNNLMContestant`: a datastore of world-lm's own pretraining sentences (every train fact
  under every train template), into which each update's sentence is inserted; every position's
  next-token distribution is eq. 3 of Khandelwal et al. with notebook 03's λ = 0.5, k = 8,
  T = 10 (:mod:`lfmlab.retrieval.knnlm`). ``clear()`` removes the inserted entries.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

import torch
from torch import nn

from lfmlab.arena.adapters import Contestant
from lfmlab.arena.jobs import Update
from lfmlab.core.lm import encode_prompt
from lfmlab.editing.base import read_after
from lfmlab.retrieval import datastore, knnlm
from lfmlab.retrieval.rag import BM25Retriever

__all__ = ["RAGContestant", "KNNLMContestant"]


class _ReadStored(nn.Module):
    """The base model that reads, before each prompt, the stored sentence BM25 ranks first."""

    needs_prompt_len = True

    def __init__(self, owner: "RAGContestant"):
        super().__init__()
        self.base = owner.model          # a submodule: device_of() and .to() see the model's device
        self.owner, self.config = owner, owner.model.config

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                prompt_len: torch.Tensor | None = None, **_) -> SimpleNamespace:
        o = self.owner
        logits = o.model(input_ids=input_ids, attention_mask=attention_mask).logits
        if not o.sentences:
            return SimpleNamespace(logits=logits)
        if prompt_len is None:
            prompt_len = attention_mask.sum(-1) if attention_mask is not None else torch.full(
                (len(input_ids),), input_ids.shape[1])
        prompts = [o.tokenizer.decode(input_ids[i, :int(prompt_len[i])].tolist(), skip_special_tokens=True)
                   for i in range(len(input_ids))]
        found = o.retriever.search(prompts, 1)
        contexts = [o.contexts[int(j)] if float(s) > 0 else None
                    for s, j in zip(found.score[:, 0], found.index[:, 0])]
        return SimpleNamespace(logits=read_after(o.model, o.tokenizer, contexts, input_ids, attention_mask, logits))


class RAGContestant(Contestant):
    """Retrieval-augmented generation over a store of the updates' sentences (BM25, top 1).

    The model is untouched; an update is one stored sentence; ``clear()`` empties the store."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "RAG (BM25)"):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.sentences: list[str] = []
        self.contexts: list[list[int]] = []
        self.retriever = BM25Retriever(device="cpu")

    def add(self, update: Update) -> None:
        self.sentences.append(update.sentence)
        self.contexts.append(encode_prompt(self.tokenizer, update.sentence))
        self.retriever.fit(self.sentences)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        yield _ReadStored(self)

    def clear(self) -> None:
        self.sentences, self.contexts = [], []
        self.retriever = BM25Retriever(device="cpu")

    def footprint(self) -> int:
        """The stored sentences, their token ids (8 bytes each) and the BM25 index over them."""
        index = self.retriever.weights
        return (sum(len(s.encode()) for s in self.sentences) + 8 * sum(len(c) for c in self.contexts)
                + (index.numel() * index.element_size() if index is not None and self.sentences else 0))


class _KNNReader(nn.Module):
    """The base model whose every next-token distribution is mixed with the datastore's (eq. 3);
    its "logits" are log p, which the scorers' log-softmax leaves as they are."""

    def __init__(self, owner: "KNNLMContestant"):
        super().__init__()
        self.base = owner.model
        self.owner, self.config = owner, owner.model.config

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> SimpleNamespace:
        o = self.owner
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        logits, h = datastore.forward_with_keys(o.model, input_ids, mask, o.store.layer)     # [B, T, V], [B, T, D]
        B, T, V = logits.shape
        found = o.store.search(h.reshape(B * T, -1).float(), o.k)
        p_knn = knnlm.knn_distribution(found, o.store.values.to(logits.device), V, o.temperature)
        p = knnlm.interpolate(logits.reshape(B * T, V).float().softmax(-1), p_knn, o.lam)
        return SimpleNamespace(logits=p.clamp_min(1e-30).log().view(B, T, V))


class KNNLMContestant(Contestant):
    """kNN-LM over world-lm's pretraining sentences; an update inserts its sentence's entries."""

    def __init__(self, model: nn.Module, tokenizer, world, lam: float = 0.5, k: int = 8,
                 temperature: float = 10.0, name: str = "kNN-LM"):
        knnlm.settings(lam, k, temperature)
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.lam, self.k, self.temperature = lam, k, temperature
        corpus = [world.sentence(f, t) for f in world.facts_of(split="train")
                  for t in range(len(world.templates[f.relation]["train"]))]
        self.store = datastore.build(model, tokenizer, corpus)
        self.added: list[int] = []

    def add(self, update: Update) -> None:
        self.added += self.store.add(self.model, self.tokenizer, [update.sentence])

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        yield _KNNReader(self)

    def clear(self) -> None:
        if self.added:
            self.store.remove(self.added)
        self.added = []

    def footprint(self) -> int:
        """The inserted entries: key, value, document and position of each, and their text."""
        if not self.added:
            return 0
        st = self.store
        rows = int(torch.isin(st.doc, torch.tensor(self.added, device=st.doc.device)).sum())
        per_row = (st.keys.shape[1] * st.keys.element_size() + st.values.element_size() + st.doc.element_size()
                   + st.pos.element_size())
        return rows * per_row + sum(len(st.documents[i].encode()) for i in self.added)
