"""Null methods of notebook 02 (model tuning), computed for real on the smoke task (seed 0).

Each method of :mod:`lfmlab.tuning.claims` is replaced by what it is without its mechanism:

* every gradient method (full fine-tuning, BitFit, LoRA, DoRA, adapters, AdaMix, (IA)³, prefix, prompt and
  P-tuning, instruction tuning, the minilm runs): the same method with learning rate 0, so its
  parameters never move (AdamW with lr = 0 leaves every parameter unchanged at every step, so 2
  steps give exactly the model 30 would; it keeps this module fast);
* rsLoRA: LoRA's own α/r scaling (its gain over LoRA is then 0);
* BBT: random search at the same budget (same subspace, examples, candidates and model calls);
* BDPL: random discrete prompts at its budget (same candidates, examples and model calls);
* WiSE-FT: interpolation towards a "fine-tuned" model that was never updated;
* the LoRA merge: a merge that drops the low-rank update (the base weights); serving the merged
  LoRA: serving it unmerged; adapters' latency: the base model without adapters; AdapterFusion:
  its fusion layer untrained; LoRA's intruder dimensions: LoRA trained with learning rate 0;
* the panel: one without its input check.

``null_measured()`` returns {method: {measured key: value}} with the keys the notebook writes.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
import torch

from lfmlab.tuning.claims import CLAIMS  # noqa: F401  (read by the driver)

NOTEBOOK = "02_model_tuning"
SEED = 0
ACC = "/held-out accuracy"
HO = "held-out subjects"


def _lr0(steps: int = 2, batch: int = 16):
    from lfmlab.tuning.train import TrainConfig

    return TrainConfig(steps=steps, lr=0.0, batch_size=batch, seed=SEED, every=steps)


def _gradient_nulls(model, tok, task) -> dict[str, dict[str, float]]:
    from lfmlab.tuning import methods, prompt, ptuning

    out: dict[str, dict[str, float]] = {}
    sizes = {"LoRA": 4, "DoRA": 4, "adapters": 8, "AdaMix": 8, "prefix tuning": 8, "prompt tuning": 10, "P-tuning": 10}
    for name in ["full fine-tuning", "BitFit", "LoRA", "DoRA", "adapters", "AdaMix", "(IA)³", "prefix tuning",
                 "prompt tuning", "P-tuning"]:
        r = methods.run(name, model, task.train, size=sizes.get(name), config=_lr0())
        deployed = methods.METHODS[name].deploy(r)
        out[name] = {name + ACC: task.test.accuracy(deployed), f"{name}/held-out loss": task.test.mean_loss(deployed)}
        if name == "AdaMix":
            from lfmlab.tuning import adapters

            out[name]["AdaMix mixture" + ACC] = task.test.accuracy(adapters.mixture_model(r, samples=8, seed=SEED))
    out["prompt tuning"]["prompt tuning/untuned held-out loss"] = task.test.mean_loss(
        prompt.add_prompt(model, 10, seed=SEED).eval())
    out["P-tuning"]["P-tuning/untuned held-out loss"] = task.test.mean_loss(
        ptuning.bake(ptuning.add_ptuning(model, 10, seed=SEED)))
    return out


def _bbt_null(model, task) -> dict[str, float]:
    """Random search with the notebook's smoke BBT budget (8 candidates x 20 calls, 12 examples)."""
    from lfmlab.tuning import bbt

    rs = bbt.random_search(model, task.train, n_tokens=5, k=20, popsize=8, generations=20, examples=12, seed=SEED)
    return {"BBT/held-out loss": task.test.mean_loss(rs.model), "BBT" + ACC: task.test.accuracy(rs.model)}


def _wise_null(model, task) -> dict[str, float]:
    from lfmlab.tuning import methods, wiseft

    never = methods.run("full fine-tuning", model, task.train, config=_lr0()).model
    curve = wiseft.alpha_curve(model, never, [0.0, 0.5, 1.0], {k: d.accuracy for k, d in task.evals.items()})
    q, s = curve.scores[HO], curve.scores["statements"]
    return {"WiSE-FT/robust gain": min(q[1] - q[0], s[1] - s[2]),
            "WiSE-FT/questions gain, mid α over α=0": q[1] - q[0],
            "WiSE-FT/statements kept, mid α over α=1": s[1] - s[2]}


def _instruct_null(model, tok) -> dict[str, float]:
    from lfmlab.tuning import instruct

    rels = ["capital", "language", "currency_code", "iso_code", "currency", "region_country", "element_symbol"]
    it = instruct.instruction_task(tok, rels, "continent", max_per_relation=8, seed=SEED)
    r = instruct.instruction_tune(model, it, "lora", rank=8, config=_lr0())
    return {f"instruction tuning/7 relations/{k}/{when}": r.info[when][k]
            for when in ("before", "after") for k in r.info["after"]}


def _minilm_nulls() -> dict[str, dict[str, float]]:
    from lfmlab import zoo
    from lfmlab.tuning import finetune, lora, tasks

    encoder = zoo.load("minilm")
    ct = tasks.country_continent(encoder.tokenizer, seed=SEED)
    clf = tasks.EncoderClassifier(encoder.model, len(ct.classes), seed=SEED)
    ft = finetune.finetune(clf, ct.train, _lr0())
    lo = lora.lora(clf, ct.train, rank=4, targets=tasks.encoder_targets(clf), also_train=("head",), config=_lr0())
    return {"minilm full fine-tuning": {"minilm full fine-tuning" + ACC: ct.test.accuracy(ft.model)},
            "minilm LoRA": {"minilm LoRA" + ACC: ct.test.accuracy(lo.model)}}


def _bdpl_null(model, tok) -> dict[str, float]:
    """BDPL's null: random discrete prompts at its budget, as the notebook runs them."""
    from lfmlab.data import world
    from lfmlab.tuning import bdpl, tasks

    wd = world.load()
    train, test = tasks.relation_completion(tok, "capital", seed=SEED, device="cpu")
    domain = [wd.sentence(f, t) for f in wd.facts_of(None, "train") for t in range(2)]
    rand = bdpl.random_prompts(model, train, n_tokens=5, n_candidates=bdpl.domain_candidates(tok, domain, 64),
                               samples=8, steps=30, examples=16, seed=SEED)
    return {"BDPL/held-out loss": test.mean_loss(rand.model)}


def _fusion_null(model, tok) -> dict[str, dict[str, float]]:
    """AdapterFusion's null: the same sources, the fusion layer left untrained (≈ uniform mixture)."""
    from lfmlab.tuning import fusion
    from lfmlab.tuning.train import TrainConfig

    cfg = TrainConfig(steps=30, lr=1e-2, batch_size=16, seed=SEED, every=30)
    st = fusion.study(model, tok, ["capital", "continent", "language"], "language", bottleneck=8,
                      source_config=cfg, fusion_config=None, seed=SEED, device="cpu")
    return {"AdapterFusion/held-out accuracy": st.accuracy["uniform mixture"],
            "AdapterFusion/best single adapter": st.accuracy[st.best_single],
            "AdapterFusion/uniform mixture": st.accuracy["uniform mixture"],
            "AdapterFusion/own − distractor weight": st.attention("language") - st.attention("continent")}


def _mechanism_nulls(model, task) -> dict[str, dict[str, float]]:
    import copy

    from lfmlab.tuning import lora, methods
    from lfmlab.tuning.train import TrainConfig, flops, latency_ratios
    from lfmlab.ui.tuning import TuningPanel

    trained = methods.run("LoRA", model, task.train, size=4,
                          config=TrainConfig(steps=5, lr=1e-2, batch_size=16, seed=SEED, every=5)).model
    probe = task.test.rows(range(16))
    real = probe.attention_mask.bool()
    with torch.no_grad():  # the null merge forgets B A: its "merged" model is the base model
        w = copy.deepcopy(trained).double()
        base = copy.deepcopy(model).double()
        a = w(input_ids=probe.input_ids, attention_mask=probe.attention_mask).logits[real]
        b = base(input_ids=probe.input_ids, attention_mask=probe.attention_mask).logits[real]
    gap = float((a - b).abs().max())
    unmerged = methods.run("LoRA", model, task.train, size=4,
                           config=TrainConfig(steps=2, lr=1e-2, batch_size=16, seed=SEED, every=2)).model
    one = task.test.rows([0])
    lat = latency_ratios({"base": model, "base again": model}, one.input_ids, one.attention_mask, rounds=30)
    unmerged_flops = flops(unmerged, one.input_ids, one.attention_mask) / flops(model, one.input_ids,
                                                                                one.attention_mask)

    class NoCheckPanel(TuningPanel):
        def check(self):  # the null: no input check
            pass

    panel = NoCheckPanel(model, task, batch_size=16, seed=SEED)
    panel.method = "LoRA"
    panel.size = 0
    busy: list[bool] = []
    panel.observe(lambda change: busy.append(change.new), names=["busy"])
    last = panel.result
    panel.run()
    refused = (not panel.ok) and "between" in panel.message and panel.result is last and True not in busy
    # rsLoRA's null: LoRA's α/r scaling, i.e. the rank-64 run of the sweep done twice the plain way
    sweep = TrainConfig(steps=10, lr=3e-3, batch_size=16, seed=SEED, every=10)
    plain = [lora.lora(model, task.train, rank=64, alpha=8, config=sweep).losses[-5:] for _ in range(2)]
    from lfmlab.tuning import spectra

    still = lora.merge_and_unload(methods.run("LoRA", model, task.train, size=4, config=_lr0()).model)
    pairs = spectra.matrix_pairs(model, still, ("c_attn.weight",)).values()
    intruders = sum(spectra.intruders(w0, w, 10, 0.6) for w0, w in pairs)
    return {"LoRA intruders": {"intruders/LoRA": float(intruders)},
            "rsLoRA": {"rsLoRA/loss gain over LoRA at r=64": sum(plain[0]) / 5 - sum(plain[1]) / 5},
            "LoRA merge": {"LoRA merge/max logit gap, float64": gap},
            "LoRA merged serving": {"flops/LoRA merged": unmerged_flops},
            "adapters latency": {"latency/adapters": lat["base again"]},
            "panel": {"panel/refused a bad size": float(refused)}}


def null_measured() -> dict[str, dict[str, float]]:
    from lfmlab import runtime, zoo
    from lfmlab.tuning import tasks

    runtime.setup(seed=SEED, device="cpu", smoke=True)
    world_lm = zoo.load("world-lm", device="cpu")
    model, tok = world_lm.model, world_lm.tokenizer
    task = tasks.world_qa(tok, max_subjects=30, seed=SEED, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the notebook: world-lm is tiny, one CPU thread is faster
    try:
        out = _gradient_nulls(model, tok, task)
        out["WiSE-FT"] = _wise_null(model, task)
        out["instruction tuning"] = _instruct_null(model, tok)
        out["AdapterFusion"] = _fusion_null(model, tok)
        out["BDPL"] = _bdpl_null(model, tok)
        out.update(_mechanism_nulls(model, task))
    finally:
        torch.set_num_threads(threads)
    out["BBT"] = _bbt_null(model, task)  # as the notebook: a population batch uses every thread
    out.update(_minilm_nulls())
    return out


if __name__ == "__main__":
    import json
    import time

    start = time.perf_counter()
    print(json.dumps(null_measured(), indent=1))
    print(f"{time.perf_counter() - start:.1f}s")
