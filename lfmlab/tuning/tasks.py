"""The tuning tasks, built from real facts (:mod:`lfmlab.data.world`), and their data holders.

Two tasks, one per zoo model:

* :func:`world_qa` — **a new interface for world-lm.** world-lm learned ~1,300 facts from
  statements ("The capital of Peru is Lima."); it never saw a question. Here it must answer
  ``"Q: What is the capital of Peru? A:"`` with ``" Lima"``. We tune on the questions of some
  subjects and evaluate on *held-out subjects*, whose facts the model knows from pretraining but
  whose questions it never saw in tuning. A model can only pass that test if tuning connected
  the new interface to the knowledge already in the weights (survey §2: learn from the model);
  a randomly initialised model of the same architecture, tuned the same way, cannot.
* :func:`country_continent` — **a classification task for minilm.** Country name -> continent
  (six classes), tuned on some countries and evaluated on the others.

Data holders are pre-tokenised once and live on the device: :class:`LMData` for (prompt,
target) pairs of a causal LM, :class:`ClassData` for labelled texts. Both expose
``loss(model, idx)`` (the mean training loss of the rows ``idx``) and ``accuracy(model)``, which
is all the training loop (:mod:`lfmlab.tuning.train`) needs.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core import lm
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer

__all__ = ["LMData", "ChoiceData", "ClassData", "QATask", "ClassTask", "EncoderClassifier", "QA_RELATIONS", "qa_prompt",
           "world_qa", "relation_completion", "country_continent", "random_like", "lm_loss", "row_losses",
           "encoder_targets", "encoder_sites"]

QA_RELATIONS: tuple[str, ...] = ("capital", "continent", "language", "currency_code", "iso_code")


def qa_prompt(question: str) -> str:
    """The question-answering interface: ``"Q: What is the capital of Peru? A:"``."""
    return f"Q: {question} A:"


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over target tokens (labels != -100), as transformers computes it.

    logits [B, T, V] are aligned with labels [B, T]: position t predicts token t + 1.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row mean target-token cross-entropy [B] (used by black-box tuning to score candidates)."""
    shift, lab = logits[:, :-1].float(), labels[:, 1:]
    tok = F.cross_entropy(shift.transpose(1, 2), lab.clamp_min(0), reduction="none")  # [B, T-1]
    mask = (lab != -100).float()
    return (tok * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


@dataclass
class LMData:
    """Pre-tokenised (prompt, target) pairs: ``batch`` is an :class:`lfmlab.core.lm.PairBatch` [N, T].

    ``lengths`` [N] (CPU) holds each row's real length, so a minibatch is trimmed to its own
    width without a device sync.
    """

    prompts: list[str]
    targets: list[str]
    batch: lm.PairBatch
    lengths: torch.Tensor

    @classmethod
    def build(cls, tokenizer: Tokenizer, prompts: Sequence[str], targets: Sequence[str],
              device: torch.device | str | None = None) -> "LMData":
        if not prompts:
            raise ValueError("LMData needs at least one (prompt, target) pair")
        batch = lm.pair_batch(tokenizer, list(prompts), list(targets))
        lengths = batch.attention_mask.sum(-1)
        from lfmlab import runtime

        return cls(list(prompts), list(targets), batch.to(runtime.device(device)), lengths)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def device(self) -> torch.device:
        return self.batch.input_ids.device

    def rows(self, idx: torch.Tensor | Sequence[int]) -> lm.PairBatch:
        """Rows ``idx`` (CPU indices) trimmed to their longest real length."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        width = int(self.lengths[idx].max())
        dev = idx.to(self.device)
        b = self.batch
        return lm.PairBatch(b.input_ids[dev, :width], b.attention_mask[dev, :width], b.labels[dev, :width],
                            b.prompt_len[dev])

    def subset(self, idx: Sequence[int]) -> "LMData":
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        b = self.rows(idx)
        return LMData([self.prompts[i] for i in idx.tolist()], [self.targets[i] for i in idx.tolist()], b,
                      self.lengths[idx])

    def logits(self, model: nn.Module, idx: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, lm.PairBatch]:
        b = self.rows(idx)
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b

    def loss(self, model: nn.Module, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Mean target-token cross-entropy of rows ``idx`` (differentiable)."""
        logits, b = self.logits(model, idx)
        return lm_loss(logits, b.labels)

    @torch.no_grad()
    def scores(self, model: nn.Module, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-row mean target loss [N], greedy exact match [N] bool), on the CPU."""
        losses, exact = [], []
        for start in range(0, len(self), batch_size):
            logits, b = self.logits(model, range(start, min(len(self), start + batch_size)))
            losses.append(row_losses(logits, b.labels).cpu())
            exact.append(lm.target_logprobs(logits, b.labels)[1].cpu())
        return torch.cat(losses), torch.cat(exact)

    def accuracy(self, model: nn.Module) -> float:
        """Share of pairs whose whole target greedy decoding would produce (exact match)."""
        return float(self.scores(model)[1].float().mean())

    @torch.no_grad()
    def logprob(self, model: nn.Module, batch_size: int = 256) -> torch.Tensor:
        """Total log-probability of each target after its prompt [N] (CPU)."""
        out = []
        for start in range(0, len(self), batch_size):
            logits, b = self.logits(model, range(start, min(len(self), start + batch_size)))
            out.append(lm.target_logprobs(logits, b.labels)[0].cpu())
        return torch.cat(out)

    def mean_loss(self, model: nn.Module) -> float:
        return float(self.scores(model)[0].mean())


@dataclass
class ChoiceData:
    """Rank classification: each prompt is scored with every candidate answer (N x K pairs); a
    prompt counts as right when its true answer has the highest total log-probability."""

    pairs: LMData
    candidates: list[str]
    answer: torch.Tensor  # [N] index of the true candidate

    @classmethod
    def build(cls, tokenizer: Tokenizer, prompts: Sequence[str], targets: Sequence[str], candidates: Sequence[str],
              device: torch.device | str | None = None) -> "ChoiceData":
        cands = list(candidates)
        missing = sorted(set(targets) - set(cands))
        if missing:
            raise ValueError(f"targets {missing[:3]} are not among the candidates")
        pairs = LMData.build(
            tokenizer, [p for p in prompts for _ in cands], [c for _ in prompts for c in cands], device
        )
        return cls(pairs, cands, torch.tensor([cands.index(t) for t in targets]))

    def __len__(self) -> int:
        return len(self.answer)

    def accuracy(self, model: nn.Module) -> float:
        lp = self.pairs.logprob(model).view(len(self), len(self.candidates))  # [N, K]
        return float((lp.argmax(-1) == self.answer).float().mean())


@dataclass
class QATask:
    """world-lm question answering: ``train`` pairs and named evaluation sets.

    ``evals``: ``"held-out subjects"`` (the trained question template, subjects never tuned on),
    ``"held-out subjects, new questions"`` (other question templates: a shifted input
    distribution), ``"statements"`` (the pretraining interface under held-out templates, for the
    held-out subjects: what tuning may make the model forget).
    """

    train: LMData
    evals: dict[str, LMData]
    relations: tuple[str, ...]
    train_subjects: list[str]
    test_subjects: list[str]
    question: int = 0

    @property
    def test(self) -> LMData:
        return self.evals["held-out subjects"]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in self.evals.items())
        return (f"QATask({len(self.relations)} relations, {len(self.train)} train pairs from "
                f"{len(self.train_subjects)} subjects; {sizes})")


def world_qa(tokenizer: Tokenizer, relations: Sequence[str] = QA_RELATIONS, train_share: float = 0.5, question: int = 0,
             max_subjects: int | None = None, seed: int = 0, world=None,
             device: torch.device | str | None = None) -> QATask:
    """Build the question-answering task for world-lm (see the module docstring).

    Subjects are split at random (``seed``) into tuning and held-out subjects; only *train*
    facts (those world-lm saw in pretraining) are used, so every held-out answer is known to the
    model. ``question`` is the question template tuned on; ``max_subjects`` caps the subject
    count (smoke runs).
    """
    from lfmlab.data import world as world_data

    w = world or world_data.load()
    relations = tuple(relations)
    for r in relations:
        w._check_relation(r)
    if not 0.0 < train_share < 1.0:
        raise ValueError(f"train_share must be strictly between 0 and 1, got {train_share}")
    facts = [f for r in relations for f in w.facts_of(r, "train")]
    subjects = sorted({f.subject for f in facts})
    random.Random(seed).shuffle(subjects)
    if max_subjects is not None:
        subjects = subjects[:max_subjects]
    cut = max(1, min(len(subjects) - 1, round(train_share * len(subjects))))
    train_s, test_s = sorted(subjects[:cut]), sorted(subjects[cut:])
    ts = set(test_s)
    for r in relations:
        if question >= len(w.questions[r]):
            raise ValueError(f"relation {r!r} has {len(w.questions[r])} question templates; question={question}")

    def pairs(subs: set[str], templates: str) -> tuple[list[str], list[str]]:
        P, T = [], []
        for f in facts:
            if f.subject not in subs:
                continue
            if templates == "trained":
                qs = [w.question(f.subject, f.relation, question)]
            elif templates == "other":
                qs = [
                    w.question(f.subject, f.relation, i) for i in range(len(w.questions[f.relation])) if i != question
                ]
            else:
                qs = None
            if qs is None:
                prompts = [w.prompt(f.subject, f.relation, t, "heldout")
                           for t in range(len(w.templates[f.relation]["heldout"]))]
            else:
                prompts = [qa_prompt(q) for q in qs]
            P += prompts
            T += [f.object] * len(prompts)
        return P, T

    train = LMData.build(tokenizer, *pairs(set(train_s), "trained"), device=device)
    evals = {"held-out subjects": LMData.build(tokenizer, *pairs(ts, "trained"), device=device),
             "held-out subjects, new questions": LMData.build(tokenizer, *pairs(ts, "other"), device=device),
             "statements": LMData.build(tokenizer, *pairs(ts, "statements"), device=device)}
    return QATask(train, evals, relations, train_s, test_s, question)


def relation_completion(tokenizer: Tokenizer, relation: str = "capital", seed: int = 0, world=None,
                        device: torch.device | str | None = None) -> tuple[LMData, LMData]:
    """(train, test): ``"Peru is"`` -> ``" Lima"``, subjects split in half (``seed``). The input lacks
    the relation's words: a prompt in front must supply them (BDPL's task, :mod:`lfmlab.tuning.bdpl`)."""
    from lfmlab.data import world as world_data

    w = world or world_data.load()
    w._check_relation(relation)
    facts = w.facts_of(relation, "train")
    subjects = sorted({f.subject for f in facts})
    random.Random(seed).shuffle(subjects)
    train_s = set(subjects[:len(subjects) // 2])
    split = [[f for f in facts if (f.subject in train_s) == part] for part in (True, False)]
    return tuple(LMData.build(tokenizer, [f"{f.subject} is" for f in fs], [f.object for f in fs], device=device)
                 for fs in split)


# ---- classification with an encoder (minilm) ----------------------------------------------------------------

class EncoderClassifier(nn.Module):
    """A sentence encoder with mean pooling and a linear head: logits [B, C] = head(mean_pool(h))."""

    def __init__(self, encoder: nn.Module, n_classes: int, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        g = torch.Generator().manual_seed(seed)
        d = encoder.config.hidden_size
        self.head = nn.Linear(d, n_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_classes, d, generator=g) * d ** -0.5)
            self.head.bias.zero_()
        self.head.to(device_of(encoder))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> torch.Tensor:
        from lfmlab.zoo.minilm import mean_pool

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, T, D]
        return self.head(mean_pool(hidden, attention_mask))  # [B, C]


@dataclass
class ClassData:
    """Tokenised texts with integer labels (on the device)."""

    texts: list[str]
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    labels: torch.Tensor  # [N]

    @classmethod
    def build(cls, tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[int],
              device: torch.device | str | None = None) -> "ClassData":
        from lfmlab import runtime

        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
        dev = runtime.device(device)
        return cls(list(texts), enc["input_ids"].to(dev), enc["attention_mask"].to(dev),
                   torch.as_tensor(list(labels), dtype=torch.long, device=dev))

    def __len__(self) -> int:
        return len(self.texts)

    def loss(self, model: nn.Module, idx: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long).to(self.labels.device)
        logits = model(input_ids=self.input_ids[idx], attention_mask=self.attention_mask[idx])
        return F.cross_entropy(logits, self.labels[idx])

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        logits = model(input_ids=self.input_ids, attention_mask=self.attention_mask)
        return float((logits.argmax(-1) == self.labels).float().mean())


@dataclass
class ClassTask:
    train: ClassData
    test: ClassData
    classes: list[str]
    train_subjects: list[str] = field(default_factory=list)
    test_subjects: list[str] = field(default_factory=list)

    @property
    def evals(self) -> dict[str, ClassData]:
        return {"held-out countries": self.test}

    def __repr__(self) -> str:
        return f"ClassTask({len(self.classes)} classes, {len(self.train)} train / {len(self.test)} held-out)"


def country_continent(tokenizer: Tokenizer, train_share: float = 0.5, seed: int = 0, world=None,
                      device: torch.device | str | None = None) -> ClassTask:
    """Country name -> continent (UN M49, six classes), split by country at random (``seed``)."""
    from lfmlab.data import world as world_data

    w = world or world_data.load()
    facts = w.facts_of("continent")
    classes = w.objects("continent")
    order = list(range(len(facts)))
    random.Random(seed).shuffle(order)
    cut = round(train_share * len(facts))
    tr, te = [facts[i] for i in order[:cut]], [facts[i] for i in order[cut:]]

    def data(fs):
        return ClassData.build(tokenizer, [f.subject for f in fs], [classes.index(f.object) for f in fs], device)

    return ClassTask(data(tr), data(te), classes, [f.subject for f in tr], [f.subject for f in te])


# ---- helpers ---------------------------------------------------------------------------------------------------

def random_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """The untrained control: a model of the same architecture (same config), randomly initialised.

    Works for any transformers ``PreTrainedModel`` and for :class:`EncoderClassifier`.
    """
    if isinstance(model, EncoderClassifier):
        return EncoderClassifier(random_like(model.encoder, seed), model.head.out_features, seed)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's random state
        torch.manual_seed(seed)
        fresh = type(model)(copy.deepcopy(model.config))
    return fresh.to(device_of(model)).eval()


def encoder_targets(model: nn.Module) -> list[str]:
    """LoRA targets of a BERT-style encoder: its attention query and value projections."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(("query", "value"))]
    if not names:
        raise ValueError("found no attention 'query'/'value' Linear modules: pass LoRA targets by name")
    return names


def encoder_sites(model: nn.Module) -> list[str]:
    """Houlsby adapter sites of a BERT-style encoder: the attention output projection and the
    feed-forward output projection of each layer (adapters act before the residual and LayerNorm)."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and (n.endswith("attention.output.dense") or
                                              (n.endswith("output.dense") and "attention" not in n))]
    if not names:
        raise ValueError("found no BERT-style output projections: pass adapter sites by name")
    return names
