"""The arena's contestants: one adapter per method, one interface (``add`` / ``edited`` / ``clear``).

A :class:`Contestant` takes :class:`~lfmlab.arena.jobs.Update` objects (a weight editor reads
the request; a text-only method reads the fact's sentence), holds them, yields the model that
knows them inside ``edited()``, and forgets them on ``clear()``. The base model is never left
changed. :data:`CONTESTANTS` is the arena's registry: each row names the survey family, the
access the method needs and the jobs it is entered for.

Entered so far:

* **model editing** (§6): FT-L, ROME, MEMIT (one request at a time, each on the model holding
  the earlier ones), GRACE, T-Patcher, IKE: the editors of notebook 07 through
  :func:`lfmlab.editing.registry.editors`, with their defaults;
* **database augmentation** (§2.3): RAG with BM25 (:class:`RAGContestant`): the fact's sentence
  is stored; at inference the best-matching stored sentence (BM25, at least one shared content
  word) is read before the prompt, through the same read-after-context pass IKE uses; and the
  kNN-LM (:class:`KNNLMContestant`): a datastore of world-lm's own pretraining sentences (every
  train fact under every train template), into which each update's sentence is inserted; every
  position's next-token distribution is eq. 3 of Khandelwal et al. with notebook 03's
  λ = 0.5, k = 8, T = 10 (:mod:`lfmlab.retrieval.knnlm`). ``clear()`` removes the inserted entries.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
from torch import nn

from lfmlab.arena.jobs import JOBS, Update
from lfmlab.arena.scorer import ACCESS, footprint
from lfmlab.core.lm import encode_prompt
from lfmlab.editing import registry as editing
from lfmlab.editing.base import read_after
from lfmlab.editing.editor import Editor
from lfmlab.retrieval import datastore, knnlm
from lfmlab.retrieval.rag import BM25Retriever

__all__ = ["Contestant", "EditorContestant", "RAGContestant", "KNNLMContestant", "ContestantInfo", "CONTESTANTS",
           "make"]


class Contestant:
    """One method entered in the arena (subclasses implement the four verbs)."""

    name: str = "contestant"
    model: nn.Module

    def add(self, update: Update) -> None:
        raise NotImplementedError

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        raise NotImplementedError
        yield  # pragma: no cover

    def clear(self) -> None:
        raise NotImplementedError

    def footprint(self) -> int:
        """Bytes the held updates add to the bare model."""
        raise NotImplementedError


class EditorContestant(Contestant):
    """A model editor of notebook 07 (:class:`lfmlab.editing.editor.Editor`) in the arena."""

    def __init__(self, editor: Editor):
        self.editor, self.name, self.model = editor, editor.name, editor.model

    def add(self, update: Update) -> None:
        self.editor.add(update.request)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        with self.editor.edited() as model:
            yield model

    def clear(self) -> None:
        self.editor.clear()

    def footprint(self) -> int:
        return footprint(self.editor)


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


@dataclass(frozen=True)
class ContestantInfo:
    name: str
    family: str          # the survey's area
    access: str          # one of scorer.ACCESS
    summary: str
    make: Callable[[editing.Workbench], Contestant]
    jobs: tuple[str, ...] = JOBS


def _editor(name: str) -> Callable[[editing.Workbench], Contestant]:
    return lambda bench: EditorContestant(editing.editors(bench, {name: None})[name])


CONTESTANTS: dict[str, ContestantInfo] = {c.name: c for c in [
    ContestantInfo("FT-L", "model tuning", "weights and gradients",
                   "fine-tune one MLP layer on the edit prompt within an L∞ ball", _editor("FT-L")),
    ContestantInfo("ROME", "model editing", "weights and gradients",
                   "rank-one update of one MLP: W k* = v*", _editor("ROME")),
    ContestantInfo("MEMIT", "model editing", "weights and gradients",
                   "least-squares update spread over four MLPs", _editor("MEMIT")),
    ContestantInfo("T-Patcher", "model editing", "weights and gradients",
                   "one trained neuron per update in the last FFN", _editor("T-Patcher")),
    ContestantInfo("GRACE", "model editing", "weights and gradients",
                   "a codebook of hidden-state keys and learned values", _editor("GRACE")),
    ContestantInfo("IKE", "model editing", "text only",
                   "the new fact and demonstrations in the prompt", _editor("IKE")),
    ContestantInfo("RAG (BM25)", "database augmentation", "text only",
                   "the fact's sentence stored; the best match read before the prompt",
                   lambda bench: RAGContestant(bench.model, bench.tokenizer)),
    ContestantInfo("kNN-LM", "database augmentation", "weights only",
                   "the fact's sentence inserted in a datastore of the pretraining text; eq. 3 at every token",
                   lambda bench: KNNLMContestant(bench.model, bench.tokenizer, bench.world)),
]}
assert all(c.access in ACCESS for c in CONTESTANTS.values())


def make(name: str, bench: editing.Workbench) -> Contestant:
    """The contestant ``name`` for ``bench.model``; KeyError lists the registry."""
    if name not in CONTESTANTS:
        raise KeyError(f"unknown contestant {name!r}; the arena has {', '.join(CONTESTANTS)}")
    return CONTESTANTS[name].make(bench)
