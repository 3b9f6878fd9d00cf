"""Null methods of notebook 06 (meta learning), computed at the smoke sizes (SEED 0).

* "MAML", "FOMAML", "Reptile" (sinusoids): zero outer steps, i.e. the random initialisation
  adapted exactly as the notebook adapts every learner (computed here);
* "MAML (conv)", "ANIL (conv)", the DFML rows and "ProtoNet": zero outer steps / an untrained
  embedding. Their paired difference with their own start is exactly 0 on every episode; their
  comparisons with nearest centroid and weight averaging are the start's, which the recorded run
  measured as the rows "conv, random init", "random init" and "ProtoNet, untrained embedding";
* "task zoo": models trained for 0 steps (computed here);
* "vmap meta-gradient": the first-order (FOMAML) meta-gradient against the exact loop; "vmap":
  the loop timed against itself (both computed here on the notebook's 256 sinusoid tasks);
* "panels": both panels without their input checks (computed here);
* "in-context learning": the transformer never meta-trained, read with K examples in its context
  against none, on the notebook's smoke test tasks (computed here);
* "MTL": no transfer and no meta-training, i.e. the row "MTL, untrained backbone" the recorded run
  measured; against itself its paired difference is exactly 0 on every episode.
* "task-embedding network": eqs. 13-14 never fitted (0 Adam steps: f_φ(e) is the plain weight
  average for every embedding), on the notebook's smoke zoo (computed here).
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
import json
import time

import torch

from lfmlab.meta.claims import CLAIMS, DFML  # noqa: F401  (CLAIMS is read by the driver)

NOTEBOOK = "06_meta_learning"
SEED = 0
K_SHOT, N_TEST = 10, 100                         # the notebook's smoke sizes


def gen(offset=0):
    return torch.Generator().manual_seed(SEED * 1000 + offset)


def _sine_nulls() -> dict[str, dict[str, float]]:
    from lfmlab.meta import maml, sinusoid
    from lfmlab.meta.common import mse

    net0 = sinusoid.model(seed=SEED)
    params0 = maml.params_of(net0)
    batch = tuple(sinusoid.sample(256, K_SHOT, 10, gen(1)))
    _, g_loop = maml.meta_gradient_loop(net0, params0, batch, mse, steps=1, lr=0.01)
    _, g_first = maml.meta_gradient(net0, params0, batch, mse, steps=1, lr=0.01, algorithm="fomaml")
    out = {"vmap meta-gradient": {"meta-gradient/vmap vs loop":
                                  max(float((g_first[k] - g_loop[k]).abs().max()) for k in g_first)}}
    times = []
    for _ in range(2):
        start = time.perf_counter()
        maml.meta_gradient_loop(net0, params0, batch, mse, 1, 0.01)
        times.append(time.perf_counter() - start)
    out["vmap"] = {"meta-gradient/vmap speed-up, 256 tasks": times[0] / times[1]}
    test = sinusoid.sample(N_TEST, K_SHOT, 100, gen(30))
    loss = maml.adaptation(net0, test, mse, steps=10, lr=0.01).loss            # the start, adapted
    one, ten = float(loss[1].mean()), float(loss[10].mean())
    out["MAML"] = {"sine/MAML/MSE, 1 step": one}
    out["FOMAML"] = {"sine/FOMAML/MSE, 1 step": one}
    out["Reptile"] = {"sine/Reptile/MSE, 10 steps": ten}
    from lfmlab.meta import icl

    mse_k = icl.curve(icl.model(max_points=K_SHOT + 1, seed=SEED), test, [0, K_SHOT]).mean(1)
    out["in-context learning"] = {"in-context/MSE after K examples ÷ after none": float(mse_k[1] / mse_k[0])}
    return out


def _digit_nulls(recorded: dict[str, float]) -> dict[str, dict[str, float]]:
    from lfmlab.data import digits
    from lfmlab.meta import dfml, nets, pools

    zero = {f"{k}-shot, {s}": 0.0 for k in (1, 5) for s in ("mean", "CI low")}  # a learner against itself

    def against_start(name, start, others):
        out = {f"{name} − {start}/{key}": v for key, v in zero.items()}
        for other in others:
            out.update({f"{name} − {other}/{key}": recorded[f"{start} − {other}/{key}"] for key in zero})
        return out

    out = {"ProtoNet": against_start("ProtoNet", "ProtoNet, untrained embedding", ["nearest centroid (pixels)"]),
           "MAML (conv)": against_start("MAML (conv)", "conv, random init", ["nearest centroid (pixels)"]),
           "ANIL (conv)": against_start("ANIL (conv)", "conv, random init", [])}
    for name in DFML:
        out[name] = against_start(name, "random init", ["(a) weight average"])
    out["MTL"] = against_start("MTL", "MTL, untrained backbone", ["MAML (conv), 25 steps"])
    d = digits.load()
    meta_pool = pools.augmented_pool(d.train, digits.META_TRAIN_CLASSES)
    held_pool = pools.augmented_pool(d.val, digits.META_TRAIN_CLASSES)
    untrained = dfml.train_zoo(meta_pool, held_pool, lambda m: nets.classifier(8, 5, seed=1000 + m), n_models=4,
                               steps=0, generator=gen(70))
    out["task zoo"] = {"zoo/mean held-out accuracy": float(untrained.accuracy.mean())}
    from lfmlab.meta import task_embedding
    from lfmlab.meta.common import ci95

    zoo = dfml.train_zoo(meta_pool, held_pool, lambda m: nets.classifier(8, 5, seed=1000 + m), n_models=4,
                         steps=50, generator=gen(70), disjoint=True)           # the notebook's smoke zoo
    unfitted = task_embedding.fit(zoo, task_embedding.TENConfig(steps=0), generator=gen(74)).network
    hits = {name: task_embedding.own_task_accuracy(zoo, held_pool, models) for name, models in
            (("zoo", zoo.models), ("TEN", [unfitted.regenerate(i) for i in range(len(zoo))]),
             ("average", [dfml.weight_average(zoo)] * len(zoo)))}
    out["task-embedding network"] = {
        "zoo − task-embedding network/own task, mean": float((hits["zoo"] - hits["TEN"]).mean()),
        "task-embedding network − weight average/own task, CI low": ci95((hits["TEN"] - hits["average"]).flatten()).low}
    return out


def _panel_null() -> dict[str, dict[str, float]]:
    from lfmlab.data import digits
    from lfmlab.meta import nets, sinusoid
    from lfmlab.ui.meta import FewShotPanel, SinusoidPanel

    class NoCheckFewShot(FewShotPanel):
        def check(self):  # the null: no input check
            self._refused.clear()

    class NoCheckSine(SinusoidPanel):
        def check(self):
            self._refused.clear()

    fewshot = NoCheckFewShot(digits.load().test, finetune={"conv, random init": nets.classifier(8, 5, seed=SEED)})
    last = fewshot.result
    fewshot.k_shot, fewshot.n_query = 20, 20
    fewshot.run()
    refused = (not fewshot.ok) and "smallest class" in fewshot.message and fewshot.result is last
    sine = NoCheckSine({"random init": sinusoid.model(seed=SEED)})
    last = sine.result
    sine.lr = 0.5
    sine.run()
    sine_refused = (not sine.ok) and sine.result is last
    return {"panels": {"panels/refused bad input": float(refused and sine_refused)}}


def null_measured() -> dict[str, dict[str, float]]:
    from harness import ROOT

    from lfmlab import runtime

    runtime.setup(seed=SEED, device="cpu", smoke=True)
    recorded = json.loads((ROOT / "tests" / "data" / "measured" / f"{NOTEBOOK}.seed0.json").read_text())
    out = _sine_nulls()
    out.update(_digit_nulls(recorded))
    out.update(_panel_null())
    return out


if __name__ == "__main__":
    from harness import print_nulls

    print_nulls(null_measured)
