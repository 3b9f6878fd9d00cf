"""The claims of notebook 02 (model tuning), judged by its checks cell and by
``tests/test_claims_fail_on_null.py``.

Every accuracy is exact match on the **held-out subjects** of :func:`lfmlab.tuning.tasks.world_qa`
(subjects no method tuned on; no hyperparameter was chosen on them). world-lm answers none of
these questions before tuning (zero-shot exact match 0.0), so the margins below are set from the
spread of the smoke run over seeds 0-4 (``benchmarks/claims_spread.py 02_model_tuning``): each
threshold sits below the worst seed and above what the method's null reaches. Where a method
does not reach a usable exact match in a smoke run on this 1.3M-parameter model (prompt tuning,
P-tuning and BBT stay near 0; prefix tuning swings 0.05-0.44 over seeds), its claim is on the
mean answer cross-entropy on the held-out subjects against the baseline it must beat.

Null methods (``tests/null_methods_tuning.py``, computed for real): every gradient method run with
learning rate 0 (the same steps, parameters that never move); rsLoRA replaced by LoRA's α/r; BBT
replaced by random search at the same budget; BDPL by random discrete prompts at its budget; the
LoRA merge replaced by dropping the update (the base weights); adapters by no adapters;
AdapterFusion by its untrained fusion layer; WiSE-FT, instruction tuning and the minilm runs by
tuning with learning rate 0; the panel by one without its input check.
"""
from __future__ import annotations

from lfmlab.claims import Claim

ACC = "/held-out accuracy"
ZS = "zero-shot" + ACC


def _above_zero_shot(name: str, margin: float) -> Claim:
    return Claim(f"{name}: held-out subjects exact match ≥ zero-shot + {margin:.2f}", name + ACC, ">=",
                 lambda m, margin=margin: m[ZS] + margin, about=(name,))


def _loss_below(name: str, baseline_key: str, margin: float, what: str) -> Claim:
    return Claim(f"{name}: held-out answer loss ≤ {what} − {margin:.1f}", f"{name}/held-out loss", "<=",
                 lambda m, k=baseline_key, margin=margin: m[k] - margin, about=(name,))


CLAIMS: list[Claim] = [
    # --- weight tuning and the untrained control (§2.1) ---------------------------------------
    _above_zero_shot("full fine-tuning", 0.25),
    # the "learn from model" effect: the same tuning of the same architecture, randomly initialised
    Claim("full fine-tuning: beats the untrained control on held-out subjects by ≥ 0.20",
          lambda m: m["full fine-tuning" + ACC] - m["untrained control" + ACC], ">=", 0.20,
          about=("full fine-tuning",)),
    _above_zero_shot("BitFit", 0.20),
    _above_zero_shot("LoRA", 0.25),
    _above_zero_shot("adapters", 0.40),
    _above_zero_shot("AdaMix", 0.30),
    _above_zero_shot("(IA)³", 0.20),
    _above_zero_shot("DoRA", 0.20),
    # rsLoRA's point: with a fixed α, plain LoRA's α/r makes high ranks learn slowly; α/√r does not
    # (10 steps at lr 3e-3, α = 8; smoke, seeds 0-4: 1.92-2.93 below LoRA's; at lr 1e-2 rsLoRA overshoots)
    Claim("rsLoRA: at rank 64 (α = 8) its training loss after the same 10 steps is ≥ 1.0 below LoRA's",
          "rsLoRA/loss gain over LoRA at r=64", ">=", 1.0, about=("rsLoRA",)),
    # AdaMix merging: the averaged adapter keeps the trained mixture's gain (within 0.10), and the
    # gain is real (≥ 0.20): a mixture that learned nothing cannot pass by matching itself
    Claim("AdaMix: averaged adapter keeps the mixture's gain (≥ mixture − 0.10, ≥ zero-shot + 0.20)",
          "AdaMix" + ACC, ">=",
          lambda m: max(m["AdaMix mixture" + ACC] - 0.10, m[ZS] + 0.20), about=("AdaMix",)),
    # intruder dimensions (top-10 directions of each layer's c_attn with max |cos| < 0.6 to every
    # pretrained one, summed over the 6 layers); the null, LoRA that never moved, has none
    Claim("LoRA: ≥ 4 more intruder dimensions than full fine-tuning (top 10, ε = 0.6, all layers)",
          lambda m: m["intruders/LoRA"] - m["intruders/full fine-tuning"], ">=", 4, about=("LoRA intruders",),
          fmt=".0f"),
    # AdapterFusion, target "language" (smoke, seeds 0-4: fusion − best single adapter +0.02 to
    # +0.12; own − distractor attention 0.15-0.29). The null, the untrained fusion layer (close to
    # the uniform mixture), scores 0.10-0.95: below the best single adapter on seeds 0, 2, 4, above
    # it on 1 and 3 (averaging happens to help there), so the second claim judges what training
    # adds on every seed: the attention itself
    Claim("AdapterFusion: target's held-out exact match ≥ the best single adapter's",
          "AdapterFusion" + ACC, ">=", lambda m: m["AdapterFusion/best single adapter"], about=("AdapterFusion",)),
    Claim("AdapterFusion: attends to the target's own adapter ≥ 0.08 more than to the distractor's",
          "AdapterFusion/own − distractor weight", ">=", 0.08, about=("AdapterFusion",)),
    # --- input engineering (§2.2) ----------------------------------------------------------------
    # prefix tuning's exact match after a smoke run's 25 steps ranges 0.05-0.44 over seeds: too
    # noisy to judge; its held-out answer loss falls far below the zero-shot model's on every seed
    _loss_below("prefix tuning", "zero-shot/held-out loss", 6.0, "the zero-shot model's"),
    _loss_below("prompt tuning", "prompt tuning/untuned held-out loss", 4.0, "the untuned soft prompt's"),
    _loss_below("P-tuning", "P-tuning/untuned held-out loss", 3.5, "the untuned soft prompt's"),
    _loss_below("BBT", "BBT/initial prompt held-out loss", 2.5, "its initial prompt p₀'s"),
    _loss_below("BBT", "random search/held-out loss", 0.5, "random search's at the same calls"),
    # BDPL on '… Peru is' → ' Lima', 30 calls of 8 prompts (smoke, seeds 0-4: 0.07-1.47 nats below
    # random prompts' held-out loss; seeds 0-2 were seen before its rate was fixed, see bdpl.py);
    # the null, random prompts at the same calls, is 0 below itself
    Claim("BDPL: held-out answer loss ≤ random discrete prompts' at the same calls − 0.05",
          "BDPL/held-out loss", "<=", lambda m: m["random prompts/held-out loss"] - 0.05, about=("BDPL",)),
    # --- WiSE-FT, instruction tuning, a real pretrained encoder ---------------------------------
    Claim("WiSE-FT: a mid α gains questions over α=0 and keeps statements over α=1 (both ≥ 0.15)",
          "WiSE-FT/robust gain", ">=", 0.15, about=("WiSE-FT",)),
    Claim("instruction tuning (7 relations): held-out phrasings ≥ before + 0.30",
          "instruction tuning/7 relations/held-out phrasings/after", ">=",
          lambda m: m["instruction tuning/7 relations/held-out phrasings/before"] + 0.30,
          about=("instruction tuning",)),
    # zero-shot on a relation never tuned on: 0.04-0.83 over seeds after a smoke run's 20 steps on
    # 8 facts per relation, too noisy to judge there; the full run tunes on every fact
    Claim("instruction tuning (7 relations): the held-out relation ≥ before + 0.30",
          "instruction tuning/7 relations/held-out relation/after", ">=",
          lambda m: m["instruction tuning/7 relations/held-out relation/before"] + 0.30,
          about=("instruction tuning",), full_only=True),
    Claim("minilm full fine-tuning: held-out countries ≥ max(control, majority) + 0.10",
          "minilm full fine-tuning" + ACC, ">=",
          lambda m: max(m["minilm/untrained control"], m["minilm/majority class"]) + 0.10,
          about=("minilm full fine-tuning",)),
    Claim("minilm LoRA: held-out countries ≥ max(control, majority) + 0.10",
          "minilm LoRA" + ACC, ">=",
          lambda m: max(m["minilm/untrained control"], m["minilm/majority class"]) + 0.10,
          about=("minilm LoRA",)),
    # --- mechanisms -------------------------------------------------------------------------------
    Claim("LoRA: merged equals unmerged (max |Δlogit| ≤ 1e-5, float64)", "LoRA merge/max logit gap, float64",
          "<=", 1e-5, about=("LoRA merge",), fmt=".1e"),
    # FLOPs are counted, not timed: exactly equal for the merged model; serving it unmerged (the
    # null) adds B A (+1.4 % on world-lm at batch 1)
    Claim("LoRA merged: no extra computation (FLOPs per forward = the base model's)", "flops/LoRA merged",
          "<=", 1.0, about=("LoRA merged serving",), fmt=".4f"),
    # batch 1, paired by round: adapters 1.18-1.28 x base over seeds and repeats; the null (the base
    # model timed against itself) 0.98-1.05 x
    Claim("adapters: add latency (≥ 1.10 × base, batch 1)", "latency/adapters", ">=", 1.10,
          about=("adapters latency",)),
    Claim("panel: refuses a bad size before any work, keeps its last result", "panel/refused a bad size", ">=", 1.0,
          about=("panel",)),
]
