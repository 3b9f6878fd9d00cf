"""The arena's two jobs on world-lm: *change* facts it knows, *add* facts it does not know.

Both give :class:`Update` objects, one per fact, graded the same way
(:mod:`lfmlab.arena.scorer`, the metric names of notebook 07):

* **change** (:func:`change`): CounterFact-style counterfactuals on *train* facts, which world-lm
  recalls: make it say ``target_new`` (another object of the relation) instead of the true
  object, as in :meth:`lfmlab.data.world.World.edit_requests`;
* **add** (:func:`add`): *held-out* facts, which world-lm never read in pretraining. Only those it
  gets wrong are used: ``target_new`` is the true object and ``target_true`` is what the model
  believes now, the object of the relation it scores highest. "P(new) > P(true)" then reads "the
  model now prefers the fact to its old belief".

Every update carries, beyond the request a weight editor needs:

* ``sentence``: the fact as one sentence under train template 1, which no metric scores (what a
  text-only contestant stores, retrieves or trains on);
* ``more_sentences``: the same fact under the other unscored train templates (fine-tuning with
  paraphrases);
* ``portability``: question forms ("Q: What is the capital of Peru? A:") whose answer is the
  new object. world-lm never saw a question in pretraining, so the unedited model's score on
  them is reported beside every contestant's.

What a contestant may read: a weight editor gets the request's edit prompt and objects (as every
editor does; efficacy is graded on that prompt), a text-only contestant the sentences (train
templates 1 to 3). Neither ever sees the neighbourhood and same-subject prompts (train template 0),
the paraphrases (the held-out templates) or the question forms.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch
from torch import nn

from lfmlab import validate
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, Fact, World, fill
from lfmlab.editing.metrics import pair_stats

__all__ = ["JOBS", "Update", "change", "add", "typed", "qa_prompt", "updates"]

JOBS = ("change", "add")


def qa_prompt(question: str) -> str:
    """The question form of a fact: ``"Q: What is the capital of Peru? A:"``."""
    return f"Q: {question} A:"


@dataclass(frozen=True)
class Update:
    """One fact to put into the model, and everything the scorer grades it on."""

    job: str
    request: EditRequest
    sentence: str
    more_sentences: tuple[str, ...]
    portability: tuple[tuple[str, str], ...]

    @property
    def subject(self) -> str:
        return self.request.subject


def _update(world: World, job: str, request: EditRequest) -> Update:
    r = request
    fact = Fact(r.subject, r.relation, r.target_new, "train")
    templates = world.templates[r.relation]["train"]
    sentences = [world.sentence(fact, i) for i in range(world.UNSCORED_TEMPLATE, len(templates))]
    questions = tuple((qa_prompt(fill(q, r.subject)), r.target_new) for q in world.questions[r.relation])
    return Update(job, r, sentences[0], tuple(sentences[1:]), questions)


def change(world: World, n: int, seed: int = 0, n_neighbours: int = 10) -> list[Update]:
    """``n`` counterfactual updates of known (train) facts, distinct subjects; the same for a seed."""
    return [_update(world, "change", r) for r in world.edit_requests(n, seed=seed, n_neighbours=n_neighbours)]


@torch.no_grad()
def beliefs(model: nn.Module, tokenizer: Tokenizer, world: World, facts: list[Fact]) -> list[str]:
    """For each fact, the object of its relation that ``model`` scores highest after its prompt
    (summed log-probability, every (prompt, object) pair of a relation in batched passes)."""
    out: dict[int, str] = {}
    for relation in sorted({f.relation for f in facts}):
        objects = world.objects(relation)
        mine = [i for i, f in enumerate(facts) if f.relation == relation]
        prompts = [world.prompt(facts[i].subject, relation) for i in mine for _ in objects]
        lp = pair_stats(model, tokenizer, prompts, objects * len(mine)).logprob.view(len(mine), len(objects))
        for row, i in enumerate(mine):
            out[i] = objects[int(lp[row].argmax())]
    return [out[i] for i in range(len(facts))]


def add(model: nn.Module, tokenizer: Tokenizer, world: World, n: int, seed: int = 0,
        n_neighbours: int = 10, at_most: bool = False) -> list[Update]:
    """``n`` updates that teach held-out facts ``model`` gets wrong (distinct subjects; the same
    for a seed and model). ValueError when fewer such facts exist, unless ``at_most``: then as
    many as exist."""
    pool = world.facts_of(split="heldout")
    if n < 0 or (n > len({f.subject for f in pool}) and not at_most):
        raise ValueError(f"asked for {n} facts to add, but there are held-out facts of only "
                         f"{len({f.subject for f in pool})} subjects; choose n between 0 and that")
    random.Random(seed).shuffle(pool)
    believed = beliefs(model, tokenizer, world, pool)
    chosen, seen = [], set()
    for fact, belief in zip(pool, believed):
        if belief != fact.object and fact.subject not in seen:
            seen.add(fact.subject)
            chosen.append((fact, belief))
    if at_most:
        n = min(n, len(chosen))
    if n < 0 or n > len(chosen):
        raise ValueError(f"asked for {n} facts to add, but the model gets only {len(chosen)} held-out facts "
                         f"of distinct subjects wrong; choose n between 0 and {len(chosen)}")
    out, chosen = [], chosen[:n]
    updated = {fact.subject for fact, _ in chosen}      # neighbours never name another update's subject
    for i, (fact, belief) in enumerate(chosen):
        request = world.edit_request_for(fact, n_neighbours=n_neighbours, seed=seed + i, exclude=updated)
        out.append(_update(world, "add", replace(request, target_true=belief, target_new=fact.object)))
    return out


def typed(world: World, subject: str, relation: str, new_object: str, seed: int = 0) -> Update:
    """One *change* update typed by a learner: ``subject``'s ``relation`` becomes ``new_object``.
    ValueError, saying what to type instead, for an unknown relation or subject, an empty object,
    or the object world-lm already gives."""
    if relation not in world.relations:
        raise ValueError(f"unknown relation {relation!r}; world-lm's relations are: {', '.join(world.relations)}")
    facts = [f for f in world.facts_of(split="train") if f.relation == relation]
    fact = next((f for f in facts if f.subject == subject), None)
    if fact is None:
        raise ValueError(f"unknown subject {subject!r} for {relation!r}: a typed update changes a fact world-lm "
                         f"knows, e.g. {', '.join(sorted(f.subject for f in facts)[:4])}")
    if not new_object.strip():
        raise ValueError("the new object is empty: type what the model should say instead, e.g. 'Quito'")
    validate.text("new object", new_object)            # no control characters
    if new_object.strip() == fact.object:
        raise ValueError(f"world-lm already says {fact.object!r} for {subject} / {relation}: give a different object")
    request = world.edit_request_for(fact, seed=seed)
    return _update(world, "change", replace(request, target_new=new_object.strip()))


def updates(job: str, model: nn.Module, tokenizer: Tokenizer, world: World, n: int, seed: int = 0,
            at_most: bool = False) -> list[Update]:
    """The updates of one job by name (``"change"`` or ``"add"``). ``at_most``: as many as exist
    when fewer than ``n`` do (world-lm gets 88 held-out facts wrong, 497 subjects can change)."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: choose 'change' (counterfactuals of known facts) or "
                         "'add' (held-out facts the model does not know)")
    if job == "add":
        return add(model, tokenizer, world, n, seed, at_most=at_most)
    if at_most:
        n = min(n, len({f.subject for f in world.facts_of(split="train") if len(world.objects(f.relation)) >= 2}))
    return change(world, n, seed)
