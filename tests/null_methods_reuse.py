"""Null methods of notebook 05 (model reuse), computed for real at the smoke sizes (SEED 0).

* "ensemble": its best member alone (best on test);
* "BatchEnsemble sharing": four separate members (a deep ensemble's parameters);
* "BatchEnsemble training": a BatchEnsemble that is never trained;
* "uniform soup", "greedy soup": no merge, the ingredients' shared starting point (the probe);
  "model stock": no update, model stock of two copies of that start; "SLERP": the chord (linear
  interpolation) between the same aligned pair;
* "LAWA": k = 1, the raw checkpoint of the same trajectory;
* "task arithmetic": zero task vectors (the fine-tunes replaced by the pretrained trunk), swept
  over the notebook's λ grid; "negation": λ = 0; "negation λ chosen on val": the largest λ
  of the grid for every task, chosen on nothing;
* "re-basin": the identity permutation; "Bezier curve": its control point left at the midpoint
  (the straight line); "ZipIt": the identity matching, i.e. the naive average; "OT fusion": the
  identity transport (the naive average of the same four pairs);
* each merge of the bench ("average", ..., "RegMean"): no merge, the pretrained trunk;
  "ensemble of fine-tunes": an ensemble of the pretrained trunk; "AdaMerging": learning rate 0;
  "TSV-M decorrelation": none (TSV-C at the same α = 1);
* "RegMean on shifted inputs": the uniform average of the same shifted pool, as measured in the
  recorded run (fine-tuning the 8 shifted tasks again here would add ~20 s for the same number);
* "LoraHub": no search, the uniform mix (w = 1/N) of the notebook's hub (trained here at the smoke
  size); "LoraHub search": random search at the same budget on both sides;
* "merge operators": an operator that returns the pretrained trunk; "panel": the merging
  bench without its input check.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
import json

import numpy as np
import torch

from lfmlab.reuse.claims import CLAIMS, MERGES  # noqa: F401  (CLAIMS is read by the driver)

NOTEBOOK = "05_model_reuse"
SEED = 0
MLPS = ["digits-mlp-0", "digits-mlp-1", "digits-mlp-2", "digits-mlp-3", "digits-mlp-4"]
TASKS = ["digits5-9", "parity", "greater4", "prime", "mod3", "mod4", "mod5", "reversed"]
LAYERS = ["features.0", "features.2", "head"]


def _digits_nulls(data, recorded: dict[str, float]) -> dict[str, dict[str, float]]:
    from lfmlab import zoo
    from lfmlab.core.state import state_of, with_state
    from lfmlab.reuse import (
        batchensemble,
        connectivity,
        ensemble,
        interpolate,
        lawa,
        model_stock,
        otfusion,
        rebasin,
        slerp,
        soups,
    )
    from lfmlab.zoo.digits import accuracy, build, parameter_count

    mlps = {name: zoo.load(name).model for name in MLPS}
    names, out = list(mlps), {}
    out["ensemble"] = {"ensemble/uniform": max(accuracy(m, data.test.x, data.test.y) for m in mlps.values())}
    four = [build("digits-mlp-0", seed=s) for s in range(4)]
    out["BatchEnsemble sharing"] = {"BatchEnsemble/parameters × one member":
                                    parameter_count(ensemble.ensemble(four)) / parameter_count(four[0])}
    untrained = batchensemble.train_batchensemble(data.train, members=4, epochs=0, seed=SEED).model
    out["BatchEnsemble training"] = {"BatchEnsemble/accuracy": accuracy(untrained, data.test.x, data.test.y)}

    template, _, soup_data = soups.finetune_ingredients(zoo.load("digits-backbone").model, "digits", [], seed=SEED)
    start = accuracy(template, soup_data["test"].x, soup_data["test"].y)
    out["uniform soup"] = {"soups/uniform test": start}
    out["greedy soup"] = {"soups/greedy test": start}
    w0 = state_of(template)
    stock = accuracy(with_state(template, model_stock.model_stock(w0, [w0, w0]).state), soup_data["test"].x,
                     soup_data["test"].y)
    out["model stock"] = {"model stock/share of the soup's gain":
                          (stock - start) / (recorded["soups/uniform test"] - start)}

    run_model = build("digits-mlp-0", seed=SEED)
    traj = lawa.train_trajectory(run_model, data.train, epochs=12, lr=0.08, seed=SEED)
    k1 = [accuracy(with_state(run_model, lawa.lawa(traj.checkpoints, k=1, at=i).state), data.val.x, data.val.y)
          for i in range(len(traj.checkpoints))]
    out["LAWA"] = {"LAWA/epochs 7-12 val accuracy": float(np.mean(k1[6:12]))}

    a, b = state_of(mlps[names[0]]), state_of(mlps[names[1]])
    line = connectivity.linear_path(mlps[names[0]], a, b, data.test.x, data.test.y, 25)
    raw = [state_of(m) for m in mlps.values()]
    soup = accuracy(with_state(mlps[names[0]], soups.uniform_soup(raw).state), data.test.x, data.test.y)
    out["re-basin"] = {"re-basin/smallest barrier cut": 1 - line.loss_barrier / line.loss_barrier,  # B "aligned" as is
                       "MLP soup/aligned": soup}
    keys = [k for k in a if k in b]
    mid = connectivity.BezierCurve(a, {k: 0.5 * (a[k] + b[k]) for k in keys}, b, torch.empty(0), 0.0)
    bent = mid.path(mlps[names[0]], data.test.x, data.test.y, 25)
    out["Bezier curve"] = {"Bezier/barrier ÷ line": bent.loss_barrier / line.loss_barrier}
    naive = accuracy(with_state(mlps[names[0]], interpolate.lerp(a, b, 0.5)), data.test.x, data.test.y)
    out["ZipIt"] = {"ZipIt/all layers": naive}
    spec = rebasin.mlp_spec(LAYERS)
    aligned = rebasin.weight_matching(spec, a, b, seed=SEED).state
    chord = interpolate.path_states(a, aligned, torch.linspace(0, 1, 13))
    out["SLERP"] = {"SLERP/lowest norm ratio": float(slerp.norm_ratio(chord, a, aligned).min())}
    same = [accuracy(with_state(mlps[names[0]], otfusion.otfusion(a, state_of(mlps[n]), LAYERS, identity=True).state),
                     data.test.x, data.test.y) for n in names[1:]]
    out["OT fusion"] = {"OT fusion/exact": float(np.mean(same))}
    return out


def _pool_nulls(recorded: dict[str, float]) -> dict[str, dict[str, float]]:
    from lfmlab import zoo
    from lfmlab.core.state import same_state
    from lfmlab.reuse import adamerging, interpolate, task_arithmetic, taskpool, ties, tsv
    from lfmlab.ui.merging import MergeBenchPanel

    pool = taskpool.finetune_tasks(zoo.load("digits-backbone").model, TASKS, epochs=6, seed=SEED, progress=False)
    pre, out = pool.trunk(), {}
    zero = [pre] * len(TASKS)                                          # task vectors of zero
    lams = torch.linspace(0, 1.0, 21)
    sweep = task_arithmetic.sweep_states(pre, zero, lams, pool.trunk_keys)
    test, val = pool.accuracy_batch(sweep, "test").mean(1), pool.accuracy_batch(sweep, "val").mean(1)
    chosen = int(val.argmax())
    out["task arithmetic"] = {"task arithmetic/sweep margin":
                              float(min(test[chosen] - test[0], test[chosen] - test[-1]))}
    before = pool.accuracy(pre)
    drops, kept = [], []
    ctrl = pool.control_accuracy(pre)
    for t in TASKS:
        at0 = task_arithmetic.negation(pre, pool.trunk(t), 0.0).state
        drops.append(before[t] - pool.accuracy(at0, tasks=[t])[t])
        largest = task_arithmetic.negation(pre, pool.trunk(t), 3.0).state
        kept.append(pool.control_accuracy(largest) / ctrl)
    out["negation"] = {"negation/target drop": float(np.mean(drops))}
    out["negation λ chosen on val"] = {"negation/control kept": float(min(kept))}

    pretrained = float(np.mean(list(pool.accuracy(pre).values())))
    for name in MERGES:
        out.setdefault(name, {}).update({f"bench/{name}": pretrained, f"bench/recovered/{name}": 0.0})
    out["ensemble of fine-tunes"] = {"bench/ensemble": pretrained}
    ada = adamerging.adamerging([pool.templates[t] for t in TASKS], pre, pool.trunks(), [pool.inputs(t) for t in TASKS],
                                pool.trunk_keys, init=0.3, steps=80, lr=0.0, seed=SEED).info["entropy"]
    w = max(1, len(ada) // 10)
    out["AdaMerging"] = {"AdaMerging/entropy drop": 1 - float(ada[-w:].mean() / ada[:w].mean())}
    tsv_c = tsv.tsv_merge(pre, pool.trunks(), alpha=1.0, decorrelate=False, keys=pool.trunk_keys).state
    out["TSV-M decorrelation"] = {"TSV-M/α = 1": float(np.mean(list(pool.accuracy(
        {k: tsv_c[k] for k in pool.trunk_keys}).values())))}
    out["RegMean on shifted inputs"] = {"shifted/RegMean": recorded["shifted/average"]}

    same = pool.trunk(TASKS[0])
    returns_pre = [interpolate.uniform_average([pre]), task_arithmetic.task_arithmetic(pre, [same] * 4, 0.0),
                   ties.ties_merging(pre, [same] * 3, density=1.0, lam=0.0)]
    out["merge operators"] = {"merge operators/identical in, same out":
                              float(all(same_state(m.state, same, 1e-5) for m in returns_pre))}

    class NoCheckBench(MergeBenchPanel):
        def check(self):  # the null: no input check
            pass

    bench = NoCheckBench(pool)
    last = bench.result
    bench.tasks = (TASKS[0],)
    bench.run()
    out["panel"] = {"panel/refused a single task": float((not bench.ok) and bench.result is last)}
    return out


def null_measured() -> dict[str, dict[str, float]]:
    from harness import ROOT

    from lfmlab import runtime
    from lfmlab.data import digits

    runtime.setup(seed=SEED, device="cpu", smoke=True)
    recorded = json.loads((ROOT / "tests" / "data" / "measured" / f"{NOTEBOOK}.seed0.json").read_text())
    out = _digits_nulls(digits.load(), recorded)
    out.update(_pool_nulls(recorded))
    out.update(_lorahub_nulls(recorded))
    return out


def _lorahub_nulls(recorded: dict[str, float]) -> dict[str, dict[str, float]]:
    """The notebook's hub and examples at the smoke size; the search replaced by its nulls."""
    import torch

    from lfmlab import zoo
    from lfmlab.core.lm import exact_match
    from lfmlab.data import world
    from lfmlab.reuse import lorahub

    card = zoo.load("world-lm")
    lm, tok, w = card.model, card.tokenizer, world.load()
    hub_rel = ["capital", "continent", "language", "currency_code", "iso_code", "currency", "region_country"]

    def qa(rel, facts):
        return [f"Q: {w.question(f.subject, rel)} A:" for f in facts], [f.object for f in facts]

    hub = [lorahub.train_module(lm, tok, *qa(rel, w.facts_of(rel, split="train")), steps=40, seed=100 * SEED + i)
           for i, rel in enumerate(hub_rel)]
    facts = w.facts_of("element_symbol", split="train")
    order = torch.randperm(len(facts), generator=torch.Generator().manual_seed(SEED)).tolist()
    few_p, few_t = qa("element_symbol", [facts[i] for i in order[:5]])
    test_p, test_t = qa("element_symbol", [facts[i] for i in order[5:]])
    uniform = exact_match(lorahub.mixed(lm, hub, [1 / len(hub)] * len(hub)), tok, test_p, test_t)
    cfg = lorahub.LoraHubConfig(seed=SEED)
    budget = int(recorded["LoraHub/evaluations"])    # the recorded CMA-ES run's candidates (360)
    rand = exact_match(lorahub.random_search(lm, tok, hub, few_p, few_t, budget, cfg).model, tok, test_p, test_t)
    return {"LoraHub": {"LoraHub/LoraHub (CMA-ES)": uniform},
            "LoraHub search": {"LoraHub/LoraHub (CMA-ES)": rand, "LoraHub/random search, same budget": rand}}


if __name__ == "__main__":
    from harness import print_nulls

    print_nulls(null_measured)
