"""Null methods of notebook 04 (model distillation), computed for real at the smoke sizes (SEED 0).

* "KD on real data": the student left at its initialisation;
* "DeepInversion", "DeepDream prior (DI without BN)", "ZSKD (data impressions)": 0 pixel steps,
  so the student is distilled on the starting noise images;
* "DAFL", "NAYER", "ZSKT (KL)", "DFAD (L1)": the generator left untrained (its learning rate 0), the
  student trained on its samples as usual;
* "Fast (meta-learned generator)": learning rate 0 and ε = 0, the untrained synthesiser's images;
* "Fast meta-init": ε = 0 on both sides of the notebook's comparison (same images and inner steps);
* "ADI competition": α_c = 0 on both sides (DeepInversion in rounds against itself);
* "FitNets hint", "RKD": their weights at 0, i.e. logit KD on the same few real images (computed here);
* "DeepInversion BN term": BN weight 0, i.e. the DeepDream prior, as the recorded run measured it;
* "LM student": the same student and training on as many texts of random tokens;
* "GKD", "GKD reverse KL": the cut-down world-lm student left undistilled (no update), on both
  sides of the entropy comparison;
* "panel": a distillation panel that takes any weight silently (a negative one as 0).
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
import json

import torch

from lfmlab.distill.claims import CLAIMS  # noqa: F401  (read by the driver)

NOTEBOOK = "04_model_distillation"
SEED = 0
STUDENT_STEPS, PER_CLASS, ITERATIONS, FAST_ROUNDS = 60, 8, 40, 3      # the notebook's smoke sizes
LM_TEXTS, LM_EPOCHS, SYNTH_STEPS = 400, 3, 30
FEATURE_PER_CLASS, FEATURE_STEPS = 10, 600                                # FitNets / RKD (every run length)


def null_measured() -> dict[str, dict[str, float]]:
    from harness import ROOT

    from lfmlab import runtime, zoo
    from lfmlab.core.inversion import InversionConfig
    from lfmlab.data import digits, world
    from lfmlab.distill import adversarial, dafl, deepinversion, fast, kd, lm, zskd
    from lfmlab.ui.distillation import DistillPanel

    runtime.setup(seed=SEED, device="cpu", smoke=True)
    recorded = json.loads((ROOT / "tests" / "data" / "measured" / f"{NOTEBOOK}.seed0.json").read_text())
    d = digits.load()
    test = (d.test.x, d.test.y)
    teacher = zoo.load("digits-teacher").model.eval()
    student = zoo.load("digits-student").model
    gen = lambda: torch.Generator().manual_seed(1000 * SEED + 7)  # noqa: E731  (the notebook's)
    out: dict[str, dict[str, float]] = {"KD on real data": {
        "KD on real data/accuracy": zoo.digits.accuracy(student, *test)}}

    def acc(name, r):
        out[name] = {f"{name}/accuracy": r.accuracy}

    kd_cfg = kd.KDConfig(steps=STUDENT_STEPS, jitter=1)
    di_cfg = deepinversion.DIConfig(per_class=PER_CLASS, inversion=InversionConfig(steps=0), kd=kd_cfg)
    acc("DeepInversion", deepinversion.deepinversion(teacher, student, di_cfg, test, gen()))
    acc("DeepDream prior (DI without BN)", deepinversion.deepdream(teacher, student, di_cfg, test, gen()))
    zs_cfg = zskd.ZSKDConfig(per_class=PER_CLASS, kd=kd_cfg)
    zs_cfg.inversion.steps = 0
    acc("ZSKD (data impressions)", zskd.zskd(teacher, student, zs_cfg, test, gen()))
    acc("DAFL", dafl.dafl(teacher, student, dafl.DAFLConfig(iterations=ITERATIONS, lr_g=0.0), test, gen()))
    # NAYER -> its generator (and noisy layers) untrained, the notebook's smoke budget and class names
    from lfmlab.distill import nayer

    ny_cfg = nayer.NAYERConfig(rounds=4, per_round=20, g_steps=6, lr=0.0, kd=kd_cfg)
    ny = nayer.nayer(teacher, student, ny_cfg, test, gen())
    out["NAYER"] = {"NAYER/accuracy": ny.accuracy, "NAYER/accuracy at ≤ 1/5 of DeepInversion's passes": ny.accuracy}
    for kind, name in (("kl", "ZSKT (KL)"), ("l1", "DFAD (L1)")):
        cfg = adversarial.AdversarialConfig(kind=kind, iterations=4, student_steps=10, lr_g=0.0)
        acc(name, adversarial.zskt(teacher, student, cfg, test, gen()))
    fa_cfg = fast.FastConfig(
        rounds=FAST_ROUNDS, per_round=10 * PER_CLASS // FAST_ROUNDS, inner_steps=1, lr=0.0, reptile=0.0, kd=kd_cfg
    )
    acc("Fast (meta-learned generator)", fast.fast_dfkd(teacher, student, fa_cfg, test, gen()))
    # Fast's meta-init -> ε = 0 on both sides: the notebook's comparison with nothing to compare
    eps0 = fast.FastConfig(rounds=FAST_ROUNDS, per_round=10 * PER_CLASS // FAST_ROUNDS, inner_steps=10,
                           reptile=0.0, kd=kd_cfg)
    a, b = fast.fast_dfkd(teacher, student, eps0, test, gen()), fast.fast_dfkd(teacher, student, eps0, test, gen())
    out["Fast meta-init"] = {"Fast/inner loss vs ε = 0": fast.settled_loss(a) / fast.settled_loss(b),
                             "Fast (meta-learned generator)/accuracy": a.accuracy,
                             "Fast, ε = 0 (no meta-update)/accuracy": b.accuracy}
    # ADI's competition -> α_c = 0 on both sides of the notebook's comparison
    from lfmlab.distill import adaptive_di
    rounds = adaptive_di.ADIConfig(per_class=PER_CLASS, rounds=4, competition=0.0,
                                   inversion=InversionConfig(steps=SYNTH_STEPS), kd=kd_cfg)
    a, b = (adaptive_di.adaptive_deepinversion(teacher, student, rounds, test, gen()) for _ in range(2))
    out["ADI competition"] = {
        "ADI/disagreement vs α_c = 0": float(a.history["disagreement"].mean() / b.history["disagreement"].mean()),
        "Adaptive DeepInversion/accuracy": a.accuracy, "DeepInversion in rounds (α_c = 0)/accuracy": b.accuracy}
    # FitNets' hint and RKD -> weight 0: logit KD on the notebook's few real images (same draws)
    from lfmlab.distill import features

    def few_real(g):
        rows = [torch.nonzero(d.train.y == c).flatten() for c in range(10)]
        return d.train.x[torch.cat([r[torch.randperm(len(r), generator=g)[:FEATURE_PER_CLASS]] for r in rows])]

    g = gen()
    x_seen = few_real(g)
    plain = features.feature_kd(teacher, student, x_seen, features.FeatureKDConfig(
        steps=FEATURE_STEPS, batch_size=10 * FEATURE_PER_CLASS), test, generator=g, show=False)
    with torch.no_grad():
        t_emb, s_emb = teacher.features(x_seen), plain.student.features(x_seen)
        rel = float(features.rkd_distance(t_emb, s_emb) + features.rkd_angle(t_emb, s_emb))
    out["FitNets hint"] = {"FitNets hint + KD, few real images/accuracy": plain.accuracy}
    out["RKD"] = {"RKD + KD, few real images/accuracy": plain.accuracy, "RKD/seen relation loss ÷ KD's": rel / rel}
    out["DeepInversion BN term"] = {
        "DeepInversion/accuracy": recorded["DeepDream prior (DI without BN)/accuracy"],
        "DeepInversion/std": recorded["DeepDream prior (DI without BN)/std"]}

    w = world.load()
    facts = w.facts_of(split="train")
    facts = facts[:: max(len(facts) // 150, 1)]
    # the LM student -> the same student and training on as many random-token texts (the smoke budget)
    cfg = lm.LMDistillConfig(n_texts=LM_TEXTS, epochs=LM_EPOCHS, seed=SEED)
    cfg.arch = dict(cfg.arch, n_layer=2, n_embd=64, n_head=2)
    teacher_tok = zoo.load("world-lm").tokenizer
    g = torch.Generator().manual_seed(SEED)
    lengths = torch.randint(8, cfg.max_new_tokens + 1, (LM_TEXTS,), generator=g).tolist()
    texts = [teacher_tok.decode(torch.randint(0, len(teacher_tok), (n,), generator=g).tolist()) for n in lengths]
    noise_student, tok = lm.build_student(texts, cfg)
    lm.train_student(noise_student, tok, texts, cfg, torch.device("cpu"), show=False)
    out["LM student"] = {"LM/student recall": world.recall(noise_student, tok, facts, world=w)}

    # GKD -> no update: the cut-down student as it starts, on the notebook's held-out subjects
    from lfmlab.distill import gkd

    lm_card = zoo.load("world-lm")
    all_facts = w.facts_of(split="train")
    subjects = sorted({f.subject for f in all_facts})
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(SEED)).tolist()
    taught = {subjects[i] for i in order[:len(subjects) // 2]}
    other = [w.prompt(f.subject, f.relation) for f in all_facts if f.subject not in taught]
    small = gkd.shrink(lm_card.model)
    before = gkd.agreement(small, lm_card.model, lm_card.tokenizer, other)
    ent = [gkd.on_policy_gap(small, lm_card.model, lm_card.tokenizer, other, seed=SEED)["entropy"]
           for _ in range(2)]                                    # β = 0 and β = 1, both not trained
    out["GKD"] = {"GKD/agreement gain over the undistilled student": before - before}
    out["GKD reverse KL"] = {"GKD/entropy forward − reverse KL": ent[0] - ent[1]}

    class NoCheckPanel(DistillPanel):  # the null: takes any weight, silently (negative ones as 0)
        def check(self):
            self._refused.clear()          # nor what the sliders refused

        def weights(self):
            from lfmlab.distill.common import Weights
            from lfmlab.ui.distillation import TERMS

            return Weights(**{k: max(0.0, float(getattr(self, k))) for k in TERMS})

    panel = NoCheckPanel(teacher, student, test)
    panel.synth_steps, panel.student_steps = 5, 10
    last = panel.result
    panel.bn = -1.0
    panel.run()
    out["panel"] = {"panel/refused a negative weight":
                    float((not panel.ok) and "must be >= 0" in panel.message and panel.result is last)}
    return out


if __name__ == "__main__":
    from harness import print_nulls

    print_nulls(null_measured)
