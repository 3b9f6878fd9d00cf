"""Running the arena: one board (every chosen contestant on the same updates), scale curves, the
access filter, and the leaderboard's rows.

>>> cards = board.run(bench, "change", ["ROME", "RAG (BM25)"], n=10, seed=0)
>>> board.rows(board.usable(cards, "text only"))      # what still works if the model is an API

A contestant that trains (MEND, SERAC) never sees the subjects of the updates it will be given
(``exclude``). Every contestant starts from the same model; the scorer checks that it is left
unchanged.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from lfmlab.arena import jobs
from lfmlab.arena.contestants import CONTESTANTS, make
from lfmlab.arena.scorer import ACCESS, Scorecard, heldout_text, score
from lfmlab.editing.registry import Workbench

__all__ = ["ACCESS_RANK", "needs_at_most", "usable", "check_names", "run", "scale", "rows", "COLUMNS"]

# what a method needs, from least to most: text in and out < output scores < weights < gradients
ACCESS_RANK = {a: i for i, a in enumerate(reversed(ACCESS))}


def needs_at_most(access: str, given: str) -> bool:
    """Whether a method that needs ``access`` works when the model gives only ``given``."""
    for a in (access, given):
        if a not in ACCESS_RANK:
            raise ValueError(f"unknown access level {a!r}; choose one of: {', '.join(ACCESS)}")
    return ACCESS_RANK[access] <= ACCESS_RANK[given]


def usable(cards: Iterable[Scorecard], given: str) -> list[Scorecard]:
    """The scorecards of contestants that work when the model gives only ``given``."""
    return [c for c in cards if needs_at_most(c.access, given)]


def check_names(names: Sequence[str], job: str) -> None:
    """ValueError/KeyError with the fix for an unknown contestant, an unknown job, or a contestant
    not entered for the job."""
    if job not in jobs.JOBS:
        raise ValueError(f"unknown job {job!r}: choose 'change' (counterfactuals of known facts) or "
                         "'add' (held-out facts the model does not know)")
    if not names:
        raise ValueError("no contestant chosen: pick at least one of " + ", ".join(CONTESTANTS))
    unknown = [n for n in names if n not in CONTESTANTS]
    if unknown:
        raise KeyError(f"unknown contestant(s) {unknown}; the arena has {', '.join(CONTESTANTS)}")
    wrong = [n for n in names if job not in CONTESTANTS[n].jobs]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} is not entered for the {job!r} job; choose another job or contestant")


def run(bench: Workbench, job: str, names: Sequence[str], n: int, seed: int = 0,
        updates: list[jobs.Update] | None = None, exclude: set[str] | None = None,
        n_text: int = 64) -> list[Scorecard]:
    """Every contestant in ``names`` given the same ``n`` updates of ``job`` (drawn with ``seed``,
    or ``updates``), one after another; one :class:`Scorecard` each, in ``names`` order.
    ``exclude``: subjects a training contestant must not see (default: the updates' own);
    ``n_text``: held-out sentences for perplexity."""
    check_names(names, job)
    if updates is None:
        updates = jobs.updates(job, bench.model, bench.tokenizer, bench.world, n, seed)
    if not updates:
        raise ValueError("no updates to give: choose n >= 1")
    exclude = {u.subject for u in updates} if exclude is None else set(exclude)
    text = heldout_text(bench.world, updates, n=n_text, seed=seed)
    cards = []
    for name in names:
        contestant = make(name, bench, exclude)
        cards.append(score(contestant, bench.tokenizer, bench.world, updates, CONTESTANTS[name].access, text=text))
    return cards


def scale(bench: Workbench, job: str, names: Sequence[str], sizes: Sequence[int], seed: int = 0,
          n_text: int = 64) -> list[Scorecard]:
    """Scale curves: each contestant at each number of updates in ``sizes`` (the first k of one
    draw of max(sizes) updates, so a larger run holds the smaller one's facts)."""
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"sizes must be numbers of updates >= 1, got {list(sizes)}")
    check_names(names, job)
    pool = jobs.updates(job, bench.model, bench.tokenizer, bench.world, sizes[-1], seed)
    exclude = {u.subject for u in pool}
    return [card for k in sizes for card in run(bench, job, names, k, seed, pool[:k], exclude, n_text)]


LOWER_IS_BETTER = {"perplexity", "perplexity_before", "seconds_per_update", "bytes_added", "latency_ratio"}
COLUMNS = ("contestant", "family", "access", "job", "n", "efficacy", "paraphrase", "neighbourhood", "same_subject",
           "portability", "portability_before", "perplexity", "perplexity_before", "seconds_per_update",
           "bytes_added", "latency_ratio", "reversible")


def rows(cards: Iterable[Scorecard], sort_by: str = "score") -> list[dict]:
    """The leaderboard: one dict per scorecard with :data:`COLUMNS` and ``score``, the mean of
    efficacy, paraphrase and neighbourhood (an update that sticks, generalises and stays local),
    best first: highest first, lowest first for perplexity, seconds, bytes and latency."""
    out = []
    for c in cards:
        d = c.as_dict()
        row = {k: d[k] for k in COLUMNS if k in d}
        row["family"] = CONTESTANTS[c.contestant].family if c.contestant in CONTESTANTS else "—"
        row["score"] = (c.efficacy + c.paraphrase + c.neighbourhood) / 3
        out.append(row)
    if sort_by not in {*COLUMNS, "score"}:
        raise ValueError(f"cannot sort by {sort_by!r}; choose score or one of {', '.join(COLUMNS)}")

    def key(r):
        v = r[sort_by]
        if not isinstance(v, float):
            return (False, v)
        return (math.isnan(v), v if sort_by in LOWER_IS_BETTER else -v)     # NaN last
    return sorted(out, key=key)
