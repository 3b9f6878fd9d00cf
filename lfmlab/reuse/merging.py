"""One door to the multi-task merging methods on a :class:`~lfmlab.reuse.taskpool.TaskPool`:
the merging bench of notebook 05 and its panel call :func:`merge` and :func:`compare`.

Every method merges the trunks of the chosen tasks' fine-tuned models; each task keeps its own
head. Hyper-parameters that the papers tune on validation data (λ of task arithmetic, TIES and
DARE) are tuned here on the pool's *val* splits by :func:`select`, never on test. TSV-M keeps its
paper's α = 1 (untuned). Fisher merging uses FusionBench's defaults (256 examples per task, Fishers
normalised per model, eps 1e-6).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import torch

from lfmlab.core.state import Merged
from lfmlab.reuse import (
    adamerging,
    dare,
    fisher,
    interpolate,
    regmean,
    task_arithmetic,
    ties,
    tsv,
)
from lfmlab.reuse.taskpool import TaskPool

__all__ = ["METHODS", "EXTRA", "GRIDS", "Stats", "stats", "merge", "select", "compare", "Comparison"]

METHODS = ("average", "task arithmetic", "TIES", "DARE", "TSV-M", "Fisher", "RegMean", "AdaMerging")
# AdaMerging with an extra class-balance term (not in the paper; see adamerging.marginal_entropy).
EXTRA = ("AdaMerging+div",)
# λ grids searched on val (1/n is added to task arithmetic's, so it can always pick the average).
GRIDS: dict[str, tuple[float, ...]] = {
    "task arithmetic": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
    "TIES": (0.3, 0.5, 0.7, 1.0, 1.5),
    "DARE": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4),
}


@dataclass
class Stats:
    """Per-task statistics some methods need: diagonal Fishers and Gram matrices (computed once)."""

    fishers: dict[str, dict] = field(default_factory=dict)
    grams: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


def stats(pool: TaskPool, tasks: Sequence[str] | None = None, samples: int | None = 256, seed: int = 0) -> Stats:
    """Fisher diagonals (on ``samples`` train inputs per task, None = all) and RegMean Gram matrices
    (all train inputs) of each task's fine-tuned model, restricted to the trunk."""
    start = time.perf_counter()
    modules = sorted({k.rsplit(".", 1)[0] for k in pool.trunk_keys if k.endswith(".weight")})
    out = Stats()
    gen = torch.Generator().manual_seed(int(seed))
    for t in tasks or pool.tasks:
        model, x = pool.model(t), pool.splits[t]["train"].x
        xf = (
            x
            if samples is None or samples >= len(x)
            else x[torch.randperm(len(x), generator=gen)[:samples].to(x.device)]
        )
        out.fishers[t] = fisher.diagonal_fisher(model, xf, pool.trunk_keys)
        out.grams[t] = regmean.gram_matrices(model, x, modules)
    out.seconds = time.perf_counter() - start
    return out


def merge(pool: TaskPool, method: str, tasks: Sequence[str] | None = None, lam: float | None = None,
          st: Stats | None = None, seed: int = 0, **kw) -> Merged:
    """Merge the trunks of ``tasks`` (default: all) with ``method`` (one of :data:`METHODS`).

    ``lam``: the scaling λ of task arithmetic / TIES / DARE, TSV-M's α (default 1, the paper's),
    and AdaMerging's initial λ.
    Other keyword arguments go to the method (e.g. ``density``, ``alpha``, ``steps``).
    Fisher and RegMean need ``st`` (from :func:`stats`); it is computed when missing.
    """
    from lfmlab import validate

    tasks = list(pool.tasks) if tasks is None else validate.items(
        "tasks", tasks, fix=f"Pick at least one of {', '.join(pool.tasks)} (or pass tasks=None for all).")
    unknown = [t for t in tasks if t not in pool.tasks]
    if unknown:
        raise KeyError(f"tasks {unknown} are not in the pool; it has {', '.join(pool.tasks)}")
    pre, fts, keys = pool.trunk(), pool.trunks(tasks), pool.trunk_keys
    if method == "average":
        return interpolate.uniform_average(fts, keys)
    if method == "task arithmetic":
        return task_arithmetic.task_arithmetic(pre, fts, 0.3 if lam is None else lam, keys)
    if method == "TIES":
        return ties.ties_merging(pre, fts, kw.pop("density", 0.2), 1.0 if lam is None else lam, keys=keys, **kw)
    if method == "DARE":
        return dare.dare(pre, fts, kw.pop("density", 0.3), 0.3 if lam is None else lam, seed=seed, keys=keys, **kw)
    if method == "TSV-M":
        return tsv.tsv_merge(pre, fts, 1.0 if lam is None else lam, keys=keys, **kw)
    if method in ("Fisher", "RegMean"):
        st = st if st is not None and all(t in st.fishers for t in tasks) else stats(pool, tasks, seed=seed)
        if method == "Fisher":  # FusionBench's settings: per-model normalised Fishers, eps 1e-6
            return fisher.fisher_merging(fts, [st.fishers[t] for t in tasks], keys=keys,
                                         **{"normalize": True, "eps": 1e-6, **kw})
        return regmean.regmean(fts, [st.grams[t] for t in tasks], kw.pop("alpha", 0.9), keys, **kw)
    if method in ("AdaMerging", "AdaMerging+div"):
        if method == "AdaMerging+div":
            kw.setdefault("diversity", 1.0)
        return adamerging.adamerging([pool.templates[t] for t in tasks], pre, fts, [pool.inputs(t) for t in tasks],
                                     keys, init=0.3 if lam is None else lam, seed=seed, **kw)
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS + EXTRA)}")


def select(pool: TaskPool, method: str, tasks: Sequence[str] | None = None, grid: Sequence[float] | None = None,
           seed: int = 0, **kw) -> tuple[float, list[tuple[float, float]]]:
    """λ with the best mean *val* accuracy over ``tasks`` from ``grid`` (default :data:`GRIDS`);
    returns (λ, [(λ, val accuracy), ...])."""
    tasks = list(tasks or pool.tasks)
    grid = list(grid if grid is not None else GRIDS[method])
    if method == "task arithmetic" and 1 / len(tasks) not in grid:
        grid = sorted(grid + [1 / len(tasks)])
    scores = []
    for lam in grid:
        m = merge(pool, method, tasks, lam, seed=seed, **kw)
        acc = pool.accuracy({k: m.state[k] for k in pool.trunk_keys}, "val", tasks)
        scores.append((lam, sum(acc.values()) / len(acc)))
    best = max(scores, key=lambda s: s[1])[0]
    return best, scores


@dataclass
class Comparison:
    """Per-task test accuracies of every row (``rows[name][task]``), chosen hyper-parameters, seconds,
    and what each method reported (``info[name]``, e.g. AdaMerging's entropy per step)."""

    rows: dict[str, dict[str, float]]
    hyper: dict[str, dict]
    seconds: dict[str, float]
    info: dict[str, dict] = field(default_factory=dict)

    def mean(self, name: str) -> float:
        return sum(self.rows[name].values()) / len(self.rows[name])

    def normalised(self, name: str) -> float:
        """Mean over tasks of accuracy / the individual model's accuracy (DESIGN §6)."""
        ind = self.rows["individual"]
        return sum(self.rows[name][t] / ind[t] for t in ind) / len(ind)

    def recovered(self, name: str) -> float:
        """(merged − pretrained) / (individual − pretrained), on the mean accuracy."""
        pre, ind = self.mean("pretrained"), self.mean("individual")
        return (self.mean(name) - pre) / (ind - pre)


def compare(pool: TaskPool, methods: Sequence[str] = METHODS, tasks: Sequence[str] | None = None,
            st: Stats | None = None, seed: int = 0, adamerging_kw: dict | None = None) -> Comparison:
    """The comparison table: pretrained, each method, the logit ensemble and the individual models
    on the test splits of ``tasks``. λ's are chosen on val; AdaMerging starts from task arithmetic's λ."""
    tasks = list(tasks or pool.tasks)
    st = st if st is not None else (stats(pool, tasks, seed=seed) if {"Fisher", "RegMean"} & set(methods) else None)
    rows = {"pretrained": pool.accuracy(pool.trunk(), tasks=tasks)}
    hyper, seconds, info = {}, {}, {}
    lam_ta = None
    for method in methods:
        start = time.perf_counter()
        lam = None
        if method in GRIDS:
            lam, _ = select(pool, method, tasks, seed=seed)
            if method == "task arithmetic":
                lam_ta = lam
        kw = dict(adamerging_kw or {}) if method.startswith("AdaMerging") else {}
        if method.startswith("AdaMerging"):
            lam = lam_ta if lam_ta is not None else select(pool, "task arithmetic", tasks, seed=seed)[0]
        m = merge(pool, method, tasks, lam, st, seed=seed, **kw)
        rows[method] = pool.accuracy({k: m.state[k] for k in pool.trunk_keys}, tasks=tasks)
        hyper[method], info[method] = m.hyper, m.info
        seconds[method] = time.perf_counter() - start
    rows["ensemble"] = pool.ensemble_accuracy(tasks=tasks, members=tasks)
    rows["individual"] = pool.accuracy(tasks=tasks)
    return Comparison(rows, hyper, seconds, info)
