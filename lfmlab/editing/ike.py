"""IKE: In-context Knowledge Editing (Zheng, Li, Dong, Fan, Wu, Xu, Chang, "Can We Edit Factual
Knowledge by In-Context Learning?", EMNLP 2023; the black-box editing the survey lists as open, §6.3).

No weight is touched and only the model's outputs are needed. The new fact f = (x*, y*) and k
demonstrations C = {c_1 … c_k} are put before the input x, and the model answers from that
context (the paper's eq. 1, the prediction taken from the frozen LM):

    y = argmax_y  P_LM(y | c_1, …, c_k, f, x)

Each demonstration states some *other* new fact and then a prompt with its answer, of three
kinds, so that the model learns in context when to use the new fact:

* **copy**: the new fact's own prompt, answered with the new object;
* **update**: a paraphrase of it, answered with the new object;
* **retain**: a prompt about another subject (same relation), answered with its true object.

Written as "New Fact: {prompt} {new object}. Prompt: {prompt'} {answer}." (the paper's format).

Simplifications, stated: world-lm reads 128 tokens, so k is as many demonstrations as fit in
``max_context`` tokens (4–5 here, the paper used 32); the demonstrations are drawn at random
from world-lm's *train* facts of the edit's relation (the paper retrieves them by sentence
similarity from a pool of CounterFact edits), under train templates 1 and up only, so neither
the held-out paraphrase templates nor template 0 (the neighbourhood's) that the metrics use is
shown; their kinds cycle retain, update, copy
(equal shares; retain first, because only two fit and world-lm without a retain example copies the
new object for every subject). With several edits in memory, each input reads the
edit whose subject it names (the latest such one), or the latest edit when it names none: the
paper edits one fact at a time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from lfmlab.core.lm import encode_prompt
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, World
from lfmlab.editing.base import Edit, as_edit, read_after

__all__ = ["IKEConfig", "IKE", "demonstrations"]
FORMAT = ("New Fact: {stated} Prompt: {asked}", "New Fact: {stated} Prompt:")   # (demonstration, edit)

KINDS = ("retain", "update", "copy")


@dataclass
class IKEConfig:
    k: int = 6                 # demonstrations wanted (as many as fit in max_context are used)
    max_context: int = 100     # tokens of context before the input (world-lm reads 128 in all)
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.k, int) and 0 <= self.k <= 32):
            raise ValueError(f"k = {self.k!r}: choose between 0 (the new fact alone) and 32 demonstrations")
        if not (isinstance(self.max_context, int) and 8 <= self.max_context <= 4096):
            raise ValueError(f"max_context = {self.max_context!r}: a number of tokens, at least 8")


def _fact(prompt: str, obj: str) -> str:
    return f"{prompt} {obj}."


def demonstrations(world: World, edit: Edit, k: int, seed: int = 0) -> list[str]:
    """k demonstrations for ``edit``: other subjects' counterfactual facts of the same relation,
    each followed by a copy, update or retain prompt (train templates 1 and up, which no metric
    scores)."""
    rng = random.Random(f"{seed}|{edit.subject}|{edit.relation}")
    facts = [f for f in world.facts_of(edit.relation, split="train") if f.subject != edit.subject]
    objects = sorted({f.object for f in facts})
    # train templates 1.. only: template 0 is how the neighbourhood (other subjects, same
    # relation) and the subject's other facts are graded, so no demonstration may use it
    templates = list(range(world.UNSCORED_TEMPLATE, len(world.templates[edit.relation]["train"])))
    out = []
    for i, f in enumerate(rng.sample(facts, min(k, len(facts)))):
        new = rng.choice([o for o in objects if o != f.object] or objects)
        t = rng.choice(templates)
        stated = _fact(world.prompt(f.subject, f.relation, t), new)
        kind = KINDS[i % len(KINDS)]
        if kind == "copy":
            asked = _fact(world.prompt(f.subject, f.relation, t), new)
        elif kind == "update":
            paraphrase = rng.choice([u for u in templates if u != t] or [t])
            asked = _fact(world.prompt(f.subject, f.relation, paraphrase), new)
        else:
            other = rng.choice([g for g in facts if g.subject != f.subject])
            asked = _fact(world.prompt(other.subject, other.relation, rng.choice(templates)), other.object)
        out.append(FORMAT[0].format(stated=stated, asked=asked))
    return out


class IKE(nn.Module):
    """``base`` that reads the edits in context. Use like the base model; ``add``/``clear`` edits.

    ``needs_prompt_len``: the scorers pass where each row's answer starts, so that the edit is
    chosen from the prompt alone."""

    memory_fields = ("memory",)   # what the edits add (arena footprint)

    needs_prompt_len = True

    def __init__(self, base: nn.Module, tokenizer: Tokenizer, world: World, config: IKEConfig | None = None):
        super().__init__()
        self.base, self.tokenizer, self.world = base, tokenizer, world
        self.cfg = config or IKEConfig()
        self.memory: list[tuple[Edit, list[int]]] = []      # (edit, its context's token ids)
        self.config = base.config

    def context(self, edit: Edit) -> tuple[list[int], int]:
        """The token ids put before an input (demonstrations, the new fact, "Prompt:") and how many
        demonstrations fitted in ``max_context``."""
        tail = FORMAT[1].format(stated=_fact(edit.prompt, edit.target_new))
        demos = demonstrations(self.world, edit, self.cfg.k, self.cfg.seed)
        room = self.cfg.max_context - len(encode_prompt(self.tokenizer, tail))
        fit = 0                     # each piece is measured alone (its length barely depends on its neighbours)
        for demo in demos:
            room -= len(self.tokenizer(demo, add_special_tokens=False)["input_ids"])
            if room < 0:
                break
            fit += 1
        while True:
            ids = encode_prompt(self.tokenizer, " ".join([*demos[:fit], tail]))
            if len(ids) <= self.cfg.max_context or not fit:
                return ids, fit
            fit -= 1

    def add(self, request: EditRequest | Edit) -> dict:
        edit = as_edit(self.tokenizer, request)
        ids, n_demos = self.context(edit)
        self.memory.append((edit, ids))
        return {"context_tokens": len(ids), "demonstrations": n_demos}

    def clear(self) -> None:
        self.memory.clear()

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _choose(self, prompt: str) -> list[int]:
        named = [ids for edit, ids in self.memory if edit.subject in prompt]
        return named[-1] if named else self.memory[-1][1]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                prompt_len: torch.Tensor | None = None, **kwargs):
        if not self.memory:
            return self.base(input_ids=input_ids, attention_mask=attention_mask)
        n_rows = len(input_ids)
        if prompt_len is None:
            prompt_len = (attention_mask.sum(-1) if attention_mask is not None
                          else torch.full((n_rows,), input_ids.shape[1]))
        prompts = [self.text(input_ids[i, :int(prompt_len[i])].tolist()) for i in range(n_rows)]
        logits = torch.zeros(*input_ids.shape, self.base.config.vocab_size, device=input_ids.device)
        contexts = [self._choose(p) for p in prompts]
        logits = read_after(self.base, self.tokenizer, contexts, input_ids, attention_mask, logits)
        return SimpleNamespace(logits=logits)
