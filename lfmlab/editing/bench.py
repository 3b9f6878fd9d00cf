"""Run editors over many requests and measure them the same way (used by notebook 07, the
editing panel, the tests and benchmarks/editing.py).

* :func:`single` — each edit alone, on a fresh (unedited) model: the CounterFact protocol;
* :func:`sequential` — edits applied one after another, each computed on the model that
  already holds the earlier ones; a curve of the latest edit's success, the retention of
  earlier edits, and the neighbourhood, after every ``every`` edits;
* batch editors (MEMIT) are scored with :func:`lfmlab.editing.metrics.evaluate` directly.

An *editor* is an :class:`~lfmlab.editing.editor.Editor` (a function ``request -> EditResult`` or a
memory model with ``add`` and ``clear`` is turned into one by :func:`~lfmlab.editing.editor.as_editor`).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest
from lfmlab.editing import metrics
from lfmlab.editing.base import EditResult
from lfmlab.editing.editor import Editor, as_editor
from lfmlab.progress import progress

EditFn = Callable[[EditRequest], EditResult]


def single(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest], editor: Editor | EditFn | nn.Module,
           ref: metrics.Reference, desc: str = "edits") -> tuple[metrics.EditScores, float]:
    """Each request edited alone on the unedited model. Returns (scores, seconds per edit)."""
    editor = as_editor(model, editor, desc)
    rows, seconds = [], 0.0
    editor.clear()
    for r, a, s in progress(list(zip(requests, ref.neighbour_argmax, ref.same_subject_hit)), desc=desc):
        start = time.perf_counter()
        editor.add(r)
        seconds += time.perf_counter() - start
        with editor.edited() as edited:
            rows.append(metrics.score_one(edited, tokenizer, r, a, s))
        editor.clear()
    return metrics.summarise(rows), seconds / max(1, len(requests))


def _wins(model, tokenizer: Tokenizer, requests: list[EditRequest]) -> torch.Tensor:
    """P(new) > P(true) on each request's own prompt, all in two batched passes."""
    prompts = [r.prompt for r in requests]
    new = metrics.pair_stats(model, tokenizer, prompts, [r.target_new for r in requests]).logprob
    old = metrics.pair_stats(model, tokenizer, prompts, [r.target_true for r in requests]).logprob
    return new > old


def sequential(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest], editor: Editor | EditFn | nn.Module,
               ref: metrics.Reference, every: int = 10) -> list[dict[str, float]]:
    """Edits 1..N applied in order, each computed on the model that already holds the earlier
    ones; after every ``every`` edits: latest-edit success, retention of all earlier edits,
    neighbourhood (unchanged share over the edited requests' neighbours). The model is unchanged
    on return (the editor's edits are cleared)."""
    editor = as_editor(model, editor, "sequential")
    curve: list[dict[str, float]] = []
    editor.clear()
    try:
        for k, r in enumerate(progress(requests, desc="sequential edits"), start=1):
            editor.add(r)
            if k % every and k != len(requests):
                continue
            with editor.edited() as edited:
                wins = _wins(edited, tokenizer, requests[:k])
                rows = [metrics.score_one(edited, tokenizer, q, a, s)
                        for q, a, s in zip(requests[:k], ref.neighbour_argmax, ref.same_subject_hit)]
            curve.append({"edits": k, "latest": wins[-1].float().item(),
                          "retention": wins[:-1].float().mean().item() if k > 1 else float("nan"),
                          "neighbourhood": float(torch.tensor([r["neighbourhood"] for r in rows]).mean()),
                          "neighbourhood_score": float(torch.tensor([r["neighbourhood_score"] for r in rows]).mean())})
    finally:
        editor.clear()
    return curve
