"""Model soups (Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models
improves accuracy without increasing inference time", ICML 2022; survey §4.2.1).

Fine-tune one pretrained model several times with different hyper-parameters (the
*ingredients*), then average their weights:

* **uniform soup**: the plain average of all ingredients;
* **greedy soup** (Recipe 1): sort the ingredients by held-out accuracy, start from the best,
  and add each next one only if the soup's held-out accuracy does not drop. It is never worse
  (on the held-out data) than the best single ingredient, which the uniform soup can be.

Soups need the ingredients to share one basin: fine-tunes of one pretrained model do; models
trained from different random seeds do not, until re-basin aligns them (:mod:`rebasin`).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.state import Merged, StateDict, merge_keys, state_of
from lfmlab.reuse.interpolate import uniform_average

__all__ = ["uniform_soup", "greedy_soup", "finetune_ingredients"]


def uniform_soup(states: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str] | None = None) -> Merged:
    """The average of all ingredients (λ_i = 1/n in eq. 10)."""
    merged = uniform_average(states, keys)
    merged.method = "uniform soup"
    return merged


def greedy_soup(states: Sequence[Mapping[str, torch.Tensor]], score: Callable[[StateDict], float],
                keys: Sequence[str] | None = None) -> Merged:
    """Recipe 1 of the paper. ``score(state)`` is the held-out accuracy of a state dict (higher is better).

    ``info``: ``order`` (ingredients by score), ``scores`` (each ingredient's), ``kept`` (indices in
    the soup), ``trace`` (the soup's score after each try).
    """
    start = time.perf_counter()
    keys = list(keys) if keys is not None else merge_keys(states)
    scores = [float(score(dict(s))) for s in states]
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    kept = [order[0]]
    best = scores[order[0]]
    trace = [best]
    for i in order[1:]:
        trial = uniform_average([states[j] for j in kept + [i]], keys).state
        s = float(score(trial))
        if s >= best:
            kept.append(i)
            best = s
        trace.append(best)
    state = uniform_average([states[j] for j in kept], keys).state
    info = {"order": order, "scores": scores, "kept": kept, "trace": trace}
    return Merged(state, "greedy soup", {"n": len(states)}, time.perf_counter() - start, info)


def finetune_ingredients(backbone: nn.Module, task: str, configs: Sequence[Mapping[str, float]],
                         probe_steps: int = 150, seed: int = 0,
                         device: str | torch.device | None = None) -> tuple[nn.Module, list[StateDict], dict]:
    """Fine-tune ``backbone`` on ``task`` once per config (``lr``, ``epochs``, ``weight_decay``,
    ``seed``), all starting from the same linear-probe head (LP-FT, as in the soups paper's
    setting), with trunk and head trained. Returns (a template model, the ingredients' state dicts,
    the task's splits). ``backbone`` is unchanged."""
    from lfmlab import runtime
    from lfmlab.data import digits as D
    from lfmlab.reuse.taskpool import _finetune_trunk, probe_head, task_split

    dev = runtime.device(device)
    data = D.load(dev)
    splits = {name: task_split(split, task)[0] for name, split in data.splits().items()}
    n_classes = task_split(data.val, task)[1]
    template = copy.deepcopy(backbone).to(dev).eval()
    template.head = probe_head(template.features, splits["train"].x, splits["train"].y, n_classes,
                               steps=probe_steps, seed=seed)
    template.n_classes = n_classes
    states = []
    for i, cfg in enumerate(configs):
        model = copy.deepcopy(template)
        gen = torch.Generator(device=dev).manual_seed(int(cfg.get("seed", 1000 * seed + i)))
        _finetune_trunk(model, splits["train"], int(cfg.get("epochs", 6)), float(cfg.get("lr", 1e-3)),
                        int(cfg.get("batch_size", 32)), float(cfg.get("weight_decay", 0.0)), gen, train_head=True)
        states.append(state_of(model))
    return template, states, splits
