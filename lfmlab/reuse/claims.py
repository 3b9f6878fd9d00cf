"""What notebook 05 (model reuse) teaches, as claims a test can run (:mod:`lfmlab.claims`).

Every claim compares a method with what it would measure if it did nothing, so that its
**null method** fails it (``tests/null_methods_reuse.py`` computes those for real):

* the logit ensemble -> its best member alone; BatchEnsemble's sharing -> four separate members;
  BatchEnsemble's training -> no training;
* a soup (uniform or greedy) -> no merge: the ingredients' shared starting point; model stock ->
  no update (two copies of the start); SLERP -> the chord (linear interpolation);
* LAWA -> k = 1 (the raw checkpoint); task arithmetic and negation -> λ = 0 (zero task
  vectors); negation's λ chosen on val -> the largest λ on the grid, chosen on nothing;
* re-basin -> the identity permutation; the Bezier curve -> an untrained control point (the
  straight line); ZipIt -> the identity matching (the naive average); OT fusion -> the identity
  transport (the naive average again);
* each merge of the benchmark -> no merge (the pretrained trunk); TSV-M's decorrelation -> none
  (TSV-C, the compressed task matrices summed); RegMean on shifted inputs ->
  the uniform average; AdaMerging -> coefficients that never move (learning rate 0);
* LoraHub -> the weights left at the uniform mix (no search); its CMA-ES -> random search at
  the same budget;
* the merge operators on identical models -> an operator that returns the pretrained trunk;
* the bench's refusal -> a bench without its input check.

No claim is judged on the data that chose a hyper-parameter: soups and negation's λ are chosen
on val and judged on test; LAWA chooses nothing (k = 5 fixed) and is judged on val. Margins
were set from the spread of smoke runs over SEED 0..4 (see the comments).
"""
from __future__ import annotations

from lfmlab.claims import Claim

MERGES = ("average", "task arithmetic", "TIES", "DARE", "TSV-M", "Fisher", "RegMean")


CLAIMS: list[Claim] = [
    # --- ensembles ----------------------------------------------------------------------------
    # the zoo's MLPs are fixed (no SEED dependence): 0.978 against 0.975, one test image of 359
    Claim("ensemble: 5 MLPs beat their best member (test accuracy)", "ensemble/uniform", ">",
          "ensemble/best member", about=("ensemble",), fmt=".4f"),
    Claim("BatchEnsemble: 4 members for < 1.3 × one member's parameters", "BatchEnsemble/parameters × one member",
          "<", 1.3, about=("BatchEnsemble sharing",)),
    Claim("BatchEnsemble: accuracy ≥ one trained member − 0.01", "BatchEnsemble/accuracy", ">=",
          lambda m: m["BatchEnsemble/one member accuracy"] - 0.01, about=("BatchEnsemble training",), fmt=".3f"),
    # --- weight interpolation -----------------------------------------------------------------
    Claim("uniform soup of fine-tunes ≥ mean ingredient − 0.01 (test)", "soups/uniform test", ">=",
          lambda m: m["soups/mean ingredient test"] - 0.01, about=("uniform soup",), fmt=".3f"),
    # greedy minus the best-on-val ingredient, on test: -0.006 to +0.003 over seeds 0-4
    Claim("greedy soup (chosen on val) ≥ the best-on-val ingredient − 0.01, on test", "soups/greedy test", ">=",
          lambda m: m["soups/best-on-val ingredient test"] - 0.01, about=("greedy soup",), fmt=".3f"),
    # 0.929-0.976 over seeds 0-4 (mean over the disjoint pairs); no update (the null) is 0
    Claim("model stock: 2 fine-tunes recover ≥ 80% of the soup-of-all's gain over their start (test)",
          "model stock/share of the soup's gain", ">=", 0.8, about=("model stock",)),
    # LAWA's lead over epochs 7-12: +0.004 to +0.033 over seeds 0-4 (smoke); those epochs are trained
    # identically in every run length (the default's last epochs, settled, differ by < 0.003); k = 1 is +0
    Claim("LAWA (k = 5): val accuracy over epochs 7-12 above the raw checkpoints' (+0.002)",
          "LAWA/epochs 7-12 val accuracy", ">=", lambda m: m["LAWA/raw epochs 7-12 val accuracy"] + 0.002,
          about=("LAWA",), fmt=".4f"),
    Claim("task arithmetic: the val-chosen λ beats both ends of the sweep by ≥ 0.01 (test)",
          "task arithmetic/sweep margin", ">=", 0.01, about=("task arithmetic",), fmt=".3f"),
    Claim("negation: forgotten tasks lose ≥ 0.2 on average (test)", "negation/target drop", ">=", 0.2,
          about=("negation",), fmt=".3f"),
    Claim("negation: λ chosen on val keeps the control at ≥ 0.9 of its test accuracy",
          "negation/control kept", ">=", 0.9, about=("negation λ chosen on val",), fmt=".3f"),
    # TSV-M − TSV-C at α = 1: +0.270 to +0.303 over seeds 0-4
    Claim("TSV-M: decorrelation makes α = 1 work: TSV-M ≥ TSV-C (no decorrelation) + 0.1 (test)",
          "TSV-M/α = 1", ">=", lambda m: m["TSV-C/α = 1"] + 0.1, about=("TSV-M decorrelation",), fmt=".4f"),
    # --- LoraHub (a hub of world-lm LoRA modules, a new relation from 5 examples) ---------------
    # smoke, seeds 0-4: LoraHub 0.539-0.716, uniform mix and zero-shot 0.000 on every seed
    Claim("LoraHub: its searched mix answers ≥ 0.3 more held-out questions of the new relation than the "
          "uniform mix (w = 1/N) of the same hub", "LoraHub/LoraHub (CMA-ES)", ">=",
          lambda m: m["LoraHub/uniform mix (w = 1/N)"] + 0.3, about=("LoraHub",), fmt=".3f"),
    # CMA-ES − random search at 360 candidates: +0.088 to +0.432 over seeds 0-4
    Claim("LoraHub: CMA-ES beats random weights at the same budget by ≥ 0.05 (same objective, held-out "
          "questions)", "LoraHub/LoraHub (CMA-ES)", ">=",
          lambda m: m["LoraHub/random search, same budget"] + 0.05, about=("LoraHub search",), fmt=".3f"),
    # --- mode connectivity --------------------------------------------------------------------
    Claim("re-basin removes > 50% of the loss barrier (every pair)", "re-basin/smallest barrier cut", ">", 0.5,
          about=("re-basin",)),
    Claim("Bezier curve: barrier < 25% of the straight line's", "Bezier/barrier ÷ line", "<", 0.25,
          about=("Bezier curve",)),
    # the zoo's MLPs are fixed: ZipIt 0.947, re-basin + average 0.958, naive average 0.683
    Claim("ZipIt (all layers) beats the naive average by ≥ 0.1", "ZipIt/all layers", ">=",
          lambda m: m["ZipIt/naive average"] + 0.1, about=("ZipIt",), fmt=".3f"),
    Claim("ZipIt (all layers) comes within 0.02 of re-basin + average", "ZipIt/all layers", ">=",
          lambda m: m["ZipIt/weight matching average"] - 0.02, about=("ZipIt",), fmt=".3f"),
    # the zoo's MLPs are fixed: the arc's lowest 0.994 on every seed; the chord's 0.825
    Claim("SLERP keeps the tensors' norm along the path (lowest ≥ 0.98 of the endpoints')",
          "SLERP/lowest norm ratio", ">=", 0.98, about=("SLERP",), fmt=".3f"),
    # the zoo's MLPs are fixed: OT fusion 0.955 over the 4 pairs, naive 0.713, weight matching 0.958
    Claim("OT fusion (exact) beats the naive average by ≥ 0.1 (mean of 4 pairs)", "OT fusion/exact", ">=",
          lambda m: m["OT fusion/naive average"] + 0.1, about=("OT fusion",), fmt=".3f"),
    Claim("OT fusion (exact) comes within 0.02 of re-basin + average (mean of 4 pairs)", "OT fusion/exact",
          ">=", lambda m: m["OT fusion/weight matching average"] - 0.02, about=("OT fusion",), fmt=".3f"),
    Claim("soup of 5 MLPs: aligned by re-basin ≥ as trained + 0.2", "MLP soup/aligned", ">=",
          lambda m: m["MLP soup/as trained"] + 0.2, about=("re-basin",), fmt=".3f"),
    # --- the merging benchmark ----------------------------------------------------------------
    *[Claim(f"{name}: merged trunk ≥ pretrained + 0.01 (test, 8 tasks)", f"bench/{name}", ">=",
            lambda m: m["bench/pretrained"] + 0.01, about=(name,), fmt=".4f") for name in MERGES],
    Claim("average, task arithmetic, RegMean: each recovers ≥ 25% of the fine-tuning gain",
          lambda m: min(m[f"bench/recovered/{n}"] for n in ("average", "task arithmetic", "RegMean")), ">=", 0.25,
          about=("average", "task arithmetic", "RegMean")),
    # TSV-M − task arithmetic: +0.0049 to +0.0146 over seeds 0-4 (one seed per smoke run; against
    # TIES +0.006 to +0.020, but TIES is judged nowhere against the average, so no claim is made)
    Claim("TSV-M (α = 1, untuned) ≥ task arithmetic (λ chosen on val) + 0.003 (test, 8 tasks)", "bench/TSV-M",
          ">=", lambda m: m["bench/task arithmetic"] + 0.003, about=("TSV-M",), fmt=".4f"),
    Claim("output ensemble of the fine-tunes ≥ the uniform weight average − 0.005", "bench/ensemble", ">=",
          lambda m: m["bench/average"] - 0.005, about=("ensemble of fine-tunes",), fmt=".4f"),
    # 12-16% over seeds 0-4 (mean of the last tenth of the steps against the first tenth)
    Claim("AdaMerging: lowers its objective (entropy on unlabelled test inputs) by ≥ 10%",
          "AdaMerging/entropy drop", ">=", 0.10, about=("AdaMerging",)),
    Claim("shifted inputs: RegMean beats the average by ≥ 0.02", "shifted/RegMean", ">=",
          lambda m: m["shifted/average"] + 0.02, about=("RegMean on shifted inputs",), fmt=".4f"),
    Claim("merging identical models returns the same model (average, task arithmetic, TIES)",
          "merge operators/identical in, same out", ">=", 1.0, about=("merge operators",)),
    Claim("merging bench: refuses a single task and keeps its last result", "panel/refused a single task", ">=", 1.0,
          about=("panel",)),
]
