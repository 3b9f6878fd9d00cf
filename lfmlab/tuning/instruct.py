"""Instruction tuning (survey §2.2.2; FLAN, Wei et al. 2022; T0, Sanh et al. 2022).

Fine-tune on several tasks phrased as instructions, then ask for a task the model was *never*
tuned on. FLAN's finding: tuning on many instruction-phrased tasks teaches the model to follow
instructions in general, and zero-shot accuracy on unseen tasks grows with the number of tuning
tasks.

Here a *task* is a relation of :mod:`lfmlab.data.world` and an *instruction* is a plain-English
request ("Give the capital city of the country Peru."). We tune on the instructions of some
relations (several phrasings each, as T0 does) and evaluate on a **held-out relation** (its
instructions never appear in tuning) and on **held-out instruction phrasings** of the tuned
relations. world-lm knows all these facts from statements; tuning must teach it to map an
instruction onto the right piece of its knowledge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab.core.types import Tokenizer
from lfmlab.tuning.tasks import LMData
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult

__all__ = ["INSTRUCTIONS", "FORMAT", "InstructTask", "instruction_pairs", "instruction_task", "instruction_tune"]

FORMAT = "Instruction: {instruction} Answer:"

# Per relation: tuning phrasings first, the LAST one is held out (never used in tuning).
INSTRUCTIONS: dict[str, list[str]] = {
    "capital": [
        "Give the capital city of the country {subject}.",
        "Tell me the capital of {subject}.",
        "Name the capital of the country {subject}.",
    ],
    "continent": [
        "Give the continent of the country {subject}.",
        "Tell me the continent of {subject}.",
        "Name the continent of the country {subject}.",
    ],
    "language": [
        "Give the official language of the country {subject}.",
        "Tell me the official language of {subject}.",
        "Name the official language of the country {subject}.",
    ],
    "currency": [
        "Give the currency of the country {subject}.",
        "Tell me the currency of {subject}.",
        "Name the currency of the country {subject}.",
    ],
    "currency_code": [
        "Give the currency code of the country {subject}.",
        "Tell me the currency code of {subject}.",
        "Name the currency code of the country {subject}.",
    ],
    "iso_code": [
        "Give the ISO country code of {subject}.",
        "Tell me the three-letter country code of {subject}.",
        "Name the ISO country code of {subject}.",
    ],
    "region_country": [
        "Give the country that contains the region {subject}.",
        "Tell me the country of the region {subject}.",
        "Name the country that contains the region {subject}.",
    ],
    "element_symbol": [
        "Give the chemical symbol of the element {subject}.",
        "Tell me the chemical symbol of {subject}.",
        "Name the chemical symbol of the element {subject}.",
    ],
}


def instruction_pairs(relations: Sequence[str], phrasings: str = "tuning", subjects: set[str] | None = None,
                      world=None) -> tuple[list[str], list[str]]:
    """(prompts, targets) for the *train* facts of ``relations`` under their instructions.

    ``phrasings``: ``"tuning"`` (all but the last phrasing), ``"heldout"`` (the last one) or ``"all"``.
    ``subjects``: keep only these subjects (None: all).
    """
    from lfmlab.data import world as world_data

    w = world or world_data.load()
    prompts, targets = [], []
    for rel in relations:
        if rel not in INSTRUCTIONS:
            raise KeyError(f"no instructions for relation {rel!r}; known: {', '.join(INSTRUCTIONS)}")
        texts = {"tuning": INSTRUCTIONS[rel][:-1], "heldout": INSTRUCTIONS[rel][-1:], "all": INSTRUCTIONS[rel]}[
            phrasings
        ]
        for f in w.facts_of(rel, "train"):
            if subjects is not None and f.subject not in subjects:
                continue
            for t in texts:
                prompts.append(FORMAT.format(instruction=t.replace("{subject}", f.subject)))
                targets.append(f.object)
    return prompts, targets


@dataclass
class InstructTask:
    """``train``: instructions of ``train_relations``; ``evals``: ``"held-out relation"`` (zero-shot,
    all its phrasings) and ``"held-out phrasings"`` (tuned relations, a phrasing never tuned on)."""

    train: LMData
    evals: dict[str, LMData]
    train_relations: tuple[str, ...]
    heldout_relation: str

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in self.evals.items())
        return (f"InstructTask(tuned on {', '.join(self.train_relations)}: {len(self.train)} pairs; "
                f"held out {self.heldout_relation!r}; {sizes})")


def instruction_task(tokenizer: Tokenizer, train_relations: Sequence[str], heldout_relation: str = "continent",
                     max_per_relation: int | None = None, seed: int = 0, world=None,
                     device: torch.device | str | None = None) -> InstructTask:
    """Build the instruction-tuning task (``max_per_relation`` caps facts per relation, for smoke runs)."""
    import random

    train_relations = tuple(train_relations)
    if heldout_relation in train_relations:
        raise ValueError(f"the held-out relation {heldout_relation!r} must not be among the tuning relations")
    if not train_relations:
        raise ValueError("instruction tuning needs at least one tuning relation")

    def capped(prompts: list[str], targets: list[str], per: int) -> tuple[list[str], list[str]]:
        if max_per_relation is None:
            return prompts, targets
        keep = sorted(random.Random(seed).sample(range(len(prompts)), min(len(prompts), per)))
        return [prompts[i] for i in keep], [targets[i] for i in keep]

    P, T = [], []
    for rel in train_relations:
        p, t = instruction_pairs([rel], "tuning", world=world)
        p, t = capped(p, t, 2 * (max_per_relation or 0))
        P, T = P + p, T + t
    held = capped(*instruction_pairs([heldout_relation], "all", world=world), 3 * (max_per_relation or 0))
    phr = capped(*instruction_pairs(train_relations, "heldout", world=world), (max_per_relation or 0))
    return InstructTask(LMData.build(tokenizer, P, T, device),
                        {"held-out relation": LMData.build(tokenizer, *held, device),
                         "held-out phrasings": LMData.build(tokenizer, *phr, device)},
                        train_relations, heldout_relation)


def instruction_tune(model: nn.Module, task: InstructTask, method: str = "full", rank: int = 8,
                     config: TrainConfig | None = None, callback: Callback | None = None) -> TuneResult:
    """Tune ``model`` on ``task.train`` (``method="full"`` fine-tuning or ``"lora"``) and record the
    zero-shot accuracy on ``task.evals`` before and after in ``result.info``."""
    from lfmlab.tuning import finetune, lora

    before = {k: v.accuracy(model) for k, v in task.evals.items()}
    if method == "full":
        result = finetune.finetune(model, task.train, config, callback, method="instruction tuning")
    elif method == "lora":
        result = lora.lora(model, task.train, rank=rank, targets="all", config=config, callback=callback)
        result.method = f"instruction tuning (LoRA r={rank})"
    else:
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    result.info.update(before=before, after={k: v.accuracy(result.model) for k, v in task.evals.items()},
                       train_relations=task.train_relations, heldout_relation=task.heldout_relation)
    return result
