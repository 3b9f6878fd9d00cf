"""Editing by task-vector negation (Ilharco et al., ICLR 2023; survey §6.2.2, and notebook 05).

Not every edit is one fact. To make a model *forget* a whole body of knowledge (here: a
relation, such as every element symbol), fine-tune a copy on that knowledge, take the task
vector τ = θ_ft - θ, and subtract it: θ' = θ - λτ (eq. 11 with a negative coefficient). The
fine-tuning pushes further along the directions that encode the knowledge; going the other
way removes it, while knowledge that τ does not touch stays.

On world-lm, which already knows every fact it is tuned on, τ must stay specific: tune only
the MLP weights, gently (lr 3e-4). Tuning everything, or harder, yields a τ that mostly
sharpens the whole model, and negating it erases every relation at once. Even then the
forgetting is not surgical: a λ sweep trades the target's recall against the others'.

Returns the weight delta -λτ (the model is unchanged); the algebra is :mod:`lfmlab.core.state`'s,
the same as model reuse's task arithmetic (:mod:`lfmlab.reuse.task_arithmetic`).
"""
from __future__ import annotations

import copy
import random
import time

import torch
from torch import nn

from lfmlab.core.lm import pair_batch
from lfmlab.core.params import device_of
from lfmlab.core.state import scale, state_of, task_vector
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import Fact, World
from lfmlab.editing.base import EditResult


def forget(model: nn.Module, tokenizer: Tokenizer, world: World, facts: list[Fact], lam: float = 1.0, steps: int = 100,
           lr: float = 3e-4, batch: int = 16, scope: str = "mlp", seed: int = 0) -> EditResult:
    """Fine-tune a copy on ``facts`` (train templates; only MLP weights when ``scope="mlp"``),
    then return the delta -λ τ."""
    start = time.perf_counter()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model).train()
    device = device_of(tuned)
    trained = [p for n, p in tuned.named_parameters() if scope == "all" or ".mlp." in n]
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    for _ in range(steps):
        sample = [rng.choice(facts) for _ in range(batch)]
        prompts = [world.prompt(f.subject, f.relation, rng.randrange(len(world.templates[f.relation]["train"])))
                   for f in sample]
        b = pair_batch(tokenizer, prompts, [f.object for f in sample], device)
        loss = tuned(input_ids=b.input_ids, attention_mask=b.attention_mask, labels=b.labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    base = state_of(model)
    keys = [n for n, _ in model.named_parameters()]
    deltas = scale(task_vector(state_of(tuned), base, keys), -float(lam))  # θ' − θ = −λ τ
    return EditResult(
        deltas, time.perf_counter() - start, {"lam": lam, "steps": steps, "facts": len(facts), "scope": scope}
    )
