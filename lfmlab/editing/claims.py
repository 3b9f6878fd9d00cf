"""What notebook 07 (model editing) teaches, as claims a test can run (:mod:`lfmlab.claims`).

Every claim judges an editor against the baseline it must beat, so that its **null method**
fails it (``tests/null_methods_editing.py`` computes those for real):

* weight editors (FT, FT-L, KN, ROME, MEMIT) and SERAC -> the identity editor: the unedited
  model's numbers on the same requests ("unedited/..." in the notebook);
* MEND -> the untrained MEND editor (same architecture, 0 training steps);
* ROME's same-subject KL -> anchor weight 0 (plain ROME);
* AlphaEdit -> the same solve without its projection (P = I);
* T-Patcher -> no patch trained (the identity editor; patches never stored);
* IKE -> no context (the unedited model); IKE's demonstrations -> none (k = 0, the fact alone);
* GRACE -> an empty codebook; negation -> λ = 0;
* the model-unchanged check -> an editor that leaves its delta in the weights;
* the panel's refusal -> a panel that accepts any subject.

A claim that needs two things (an editor must edit *and* spare the neighbours) is written as
the smallest of its margins, ``min(a - a_min, b - b_min) ≥ 0``: the printed value is the
tighter margin. Margins were set from the spread of smoke runs over SEED 0..4; the smoke run
edits only 3 requests per editor, so one miss reads 0.67 and efficacy bars there are 0.6.
"""
from __future__ import annotations

from lfmlab.claims import Claim


def margins(*terms: tuple[str, float | str]):
    """``min(m[key] - bound)`` over (key, bound) terms; a bound may itself be a key."""
    def value(m):
        return min(float(m[k]) - (float(m[b]) if isinstance(b, str) else float(b)) for k, b in terms)
    return value


CLAIMS: list[Claim] = [
    # ROME against the identity editor (unedited efficacy and paraphrase are ~0)
    Claim("ROME: efficacy ≥ unedited + 0.6", "ROME/efficacy", ">=",
          lambda m: m["unedited/efficacy"] + 0.6, about=("ROME",)),
    Claim("ROME: held-out paraphrase ≥ unedited + 0.5", "ROME/paraphrase", ">=",
          lambda m: m["unedited/paraphrase"] + 0.5, about=("ROME",)),
    # 3 requests in the smoke run: one miss reads 0.67 (SEED 4), so the bar is 0.6 there too
    Claim("ROME: efficacy and neighbourhood both ≥ 0.6 (min of the two)",
          lambda m: min(m["ROME/efficacy"], m["ROME/neighbourhood"]), ">=", 0.6, about=("ROME",)),
    # constrained fine-tuning
    Claim("FT edits (efficacy ≥ 0.6) and drops neighbours ≥ 0.2 more than ROME (min margin)",
          lambda m: min(m["FT/efficacy"] - 0.6, m["ROME/neighbourhood"] - m["FT/neighbourhood"] - 0.2),
          ">=", 0.0, about=("FT",)),
    Claim("FT-L edits (efficacy ≥ unedited + 0.3) and keeps more neighbours than FT (min margin)",
          lambda m: min(m["FT-L/efficacy"] - m["unedited/efficacy"] - 0.3,
                        m["FT-L/neighbourhood"] - m["FT/neighbourhood"]),
          ">", 0.0, about=("FT-L",)),
    # knowledge neurons, attributed at the subject's last token (a stated deviation)
    Claim("KN: changes the weights on ≥ 70% of its requests", "KN/changed_share", ">=", 0.7,
          about=("KN",)),
    # KN's efficacy varies too much between seeds for 10 requests (0.0–0.5 over SEED 0–4), so it
    # is judged on the full run's 100 requests. Measured on 30 requests at three seeds: 0.23,
    # 0.23, 0.43 against 0.00 unedited, with weights changed on 93–97% of the requests.
    Claim("KN: efficacy ≥ unedited + 0.1 (on KN's requests)", "KN/efficacy", ">=",
          lambda m: m["unedited_kn/efficacy"] + 0.1, about=("KN",), full_only=True),
    # ROME's same-subject KL anchors (their null: anchor weight 0, i.e. plain ROME)
    Claim("same-subject KL: same-subject retention ≥ plain ROME's + 0.2, efficacy ≥ 0.6 (min margin)",
          lambda m: min(m["ROME + same-subject KL/same_subject"] - m["ROME/same_subject"] - 0.2,
                        m["ROME + same-subject KL/efficacy"] - 0.6),
          ">=", 0.0, about=("ROME + same-subject KL",)),
    # MEMIT, 10 edits inserted at once
    # one miss in 10 reads 0.9 (SEED 4)
    Claim("MEMIT, 10 at once: efficacy and neighbourhood score both ≥ 0.85 (min of the two)",
          lambda m: min(m["MEMIT/10/efficacy"], m["MEMIT/10/neighbourhood_score"]), ">=", 0.85,
          about=("MEMIT",)),
    Claim("MEMIT, 10 at once: edited subjects move ≥ 0.2 and others ≤ 0.3× that (min margin)",
          lambda m: min(m["MEMIT/10/spill_edited"] - 0.2,
                        0.3 * m["MEMIT/10/spill_edited"] - m["MEMIT/10/spill_others"]),
          ">=", 0.0, about=("MEMIT",)),
    # AlphaEdit, 10 at once on MEMIT's requests and targets; its null: the same solve without the
    # projection (P = I). Over SEED 0-4: efficacy 0.6-0.8, neighbourhood 0.83-0.98 (P = I:
    # 0.44-0.70); disturbance ratio 0.19-0.27.
    Claim("AlphaEdit, 10 at once: edits (efficacy ≥ 0.5) and keeps the neighbourhood ≥ 0.75 (min margin)",
          margins(("AlphaEdit/10/efficacy", 0.5), ("AlphaEdit/10/neighbourhood", 0.75)), ">=", 0.0,
          about=("AlphaEdit",)),
    Claim("AlphaEdit: the projection moves the corpus keys' MLP outputs ≤ 0.4× as much as the same "
          "solve without it", "AlphaEdit/10/disturbance_ratio", "<=", 0.4, about=("AlphaEdit",)),
    # MEND against the untrained editor. Full run only: a smoke run cannot afford the training
    # (10 steps, ~14 s, left it where it started: efficacy 0.00 for both at seed 0).
    Claim("MEND: efficacy ≥ the untrained MEND editor's + 0.3", "MEND/efficacy", ">=",
          lambda m: m["MEND untrained/efficacy"] + 0.3, about=("MEND",), full_only=True),
    Claim("MEND: one pass per edit, ≥ 5× faster than ROME (0 unless it beats the untrained editor)",
          lambda m: (m["ROME/seconds"] / m["MEND/seconds"]
                     if m["MEND/efficacy"] >= m["MEND untrained/efficacy"] + 0.3 else 0.0),
          ">=", 5.0, about=("MEND",), full_only=True),
    # memory-based editors
    Claim("SERAC: efficacy ≥ unedited + 0.6", "SERAC/efficacy", ">=",
          lambda m: m["unedited/efficacy"] + 0.6, about=("SERAC",)),
    Claim("SERAC: out of scope unchanged (neighbourhood ≥ 0.98) while it edits (efficacy ≥ 0.6)",
          margins(("SERAC/neighbourhood", 0.98), ("SERAC/efficacy", 0.6)), ">=", 0.0,
          about=("SERAC",)),
    Claim("GRACE, sequential: the latest edit lands and ≥ 0.9 of earlier ones stay (min of the two)",
          lambda m: min(m["GRACE/seq_latest"], m["GRACE/seq_retention"]), ">=", 0.9,
          about=("GRACE",)),
    # Transformer-Patcher (SEED 0-4, smoke: efficacy 1.00, neighbourhood 0.90-1.00; 4 edits in a
    # row: latest and retention 1.00, neighbourhood 0.90-1.00)
    Claim("T-Patcher: efficacy ≥ unedited + 0.6 and neighbourhood ≥ 0.8 (min margin)",
          lambda m: min(m["T-Patcher/efficacy"] - m["unedited/efficacy"] - 0.6,
                        m["T-Patcher/neighbourhood"] - 0.8),
          ">=", 0.0, about=("T-Patcher",)),
    Claim("T-Patcher, sequential: the latest edit and ≥ 0.9 of earlier ones hold, neighbourhood "
          "≥ 0.8 (min margin)",
          margins(("T-Patcher/seq_latest", 0.9), ("T-Patcher/seq_retention", 0.9),
                  ("T-Patcher/seq_neighbourhood", 0.8)), ">=", 0.0, about=("T-Patcher",)),
    # IKE on MEMIT's requests (10 in the smoke run). SEED 0-4: the new fact alone, efficacy
    # 1.00 (unedited 0.00); with demonstrations (under train templates 1-3 only, none of the
    # graded prompts' template 0), neighbourhood 0.30-0.79 against the fact alone's 0.00-0.01,
    # paraphrase 0.32-0.65 against 0.00 unedited
    Claim("IKE, the new fact in context: efficacy ≥ no context + 0.8",
          "IKE: the new fact alone/efficacy", ">=", lambda m: m["unedited_ike/efficacy"] + 0.8,
          about=("IKE",)),
    Claim("IKE's demonstrations keep other subjects: neighbourhood ≥ the new fact alone's + 0.2, "
          "paraphrase ≥ no context + 0.25 (min margin)",
          lambda m: min(m["IKE: with demonstrations/neighbourhood"] - m["IKE: the new fact alone/neighbourhood"] - 0.2,
                        m["IKE: with demonstrations/paraphrase"] - m["unedited_ike/paraphrase"] - 0.25),
          ">=", 0.0, about=("IKE demonstrations",)),
    # task-vector negation: λ chosen on one set of facts, judged on another
    Claim("negation: at the λ chosen on other facts, element symbols drop ≥ 0.3 more than the "
          "worst-hit other relation (held-out facts)", "negation/gap", ">=", 0.3,
          about=("negation",)),
    # engineering guarantees
    Claim("the zoo model is unchanged after every editor", "model/unchanged", ">=", 1.0,
          about=("restore",)),
    Claim("editor panel: an unknown subject is refused and changes nothing", "panel/refused", ">=",
          1.0, about=("panel",)),
]
