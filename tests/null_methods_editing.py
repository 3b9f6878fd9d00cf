"""Null methods of notebook 07 (model editing), measured for real on the smoke run's requests
at SEED 0 (tests/test_claims_fail_on_null.py feeds them to lfmlab.editing.claims.CLAIMS).

* FT, FT-L, KN, ROME, MEMIT, SERAC: the identity editor (no change): the unedited model's
  numbers on the same requests; KN changes no weight; MEMIT moves no hidden state.
* ROME + same-subject KL: anchor weight 0 (plain ROME, computed here).
* AlphaEdit: the same solve without the projection (P = I; disturbance ratio 1 by definition).
* IKE: no context (the unedited model); IKE's demonstrations: none (k = 0, the new fact alone).
* MEND: the untrained MEND editor (same architecture, 0 training steps).
* T-Patcher: no patch trained (identity for single edits, patches never stored in sequence).
* GRACE: an empty codebook (the edits are never stored), edited one after another.
* negation: λ = 0.
* restore: an editor that leaves its delta in the weights; panel: a panel that accepts any subject.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
import torch

from lfmlab import zoo
from lfmlab.data import world
from lfmlab.editing import bench, covariance, mend, metrics, rome
from lfmlab.editing.base import EditResult, applied
from lfmlab.editing.claims import CLAIMS  # noqa: F401  (read by the driver)

NOTEBOOK = "07_model_editing"
SEED = 0
N_EDITS, N_KN, N_MEMIT, N_SEQ = 3, 10, 10, 4   # the notebook's smoke sizes


def _scores(name: str, scores: metrics.EditScores, seconds: float | None = None) -> dict[str, float]:
    out = {f"{name}/{k}": float(v) for k, v in scores.as_dict().items()}
    if seconds is not None:
        out[f"{name}/seconds"] = float(seconds)
    return out


class _EmptyCodebook(torch.nn.Module):
    """GRACE's null: a memory editor that never stores an edit (the base model answers)."""

    def __init__(self, base):
        super().__init__()
        self.base, self.config = base, base.config

    def add(self, request):
        return {}

    def clear(self):
        pass

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return self.base(input_ids=input_ids, attention_mask=attention_mask)


def null_measured() -> dict[str, dict[str, float]]:
    wlm = zoo.load("world-lm")
    model, tok, W = wlm.model, wlm.tokenizer, world.load()
    identity = lambda q: EditResult()  # noqa: E731
    requests = W.edit_requests(N_EDITS, seed=SEED)
    ref = metrics.reference(model, tok, requests)
    unedited = bench.single(model, tok, requests, identity, ref, desc="identity")[0]
    out: dict[str, dict[str, float]] = {}
    for name in ("FT", "FT-L", "ROME", "SERAC", "T-Patcher"):
        out[name] = _scores(name, unedited)

    kn_requests = W.edit_requests(N_KN, seed=SEED)
    kn_ref = metrics.reference(model, tok, kn_requests)
    out["KN"] = {**_scores("KN", bench.single(model, tok, kn_requests, identity, kn_ref)[0]),
                 "KN/changed_share": 0.0}

    memit_requests = W.edit_requests(N_MEMIT, seed=SEED + 1)
    memit_ref = metrics.reference(model, tok, memit_requests)
    with torch.no_grad():
        memit_null = metrics.evaluate(model, tok, memit_requests, memit_ref)  # nothing inserted
    out["MEMIT"] = {**_scores("MEMIT/10", memit_null), "MEMIT/10/spill_edited": 0.0,
                    "MEMIT/10/spill_others": 0.0}

    # AlphaEdit without its projection (P = I): the same solve, the same targets
    from lfmlab.editing import alphaedit

    layer = wlm.card.notes["causal_trace"]["best_mlp_layer"]
    ae_cfg = alphaedit.AlphaEditConfig(edit_layers=tuple(range(layer, layer + 4)), seed=SEED,
                                       nullspace_threshold=1e9)
    covs = {lay: covariance.key_covariance(model, tok, lay) for lay in ae_cfg.edit_layers}
    ae_prefixes = rome.random_prefixes(model, tok, 5, (5, 10), seed=SEED)
    unprojected = alphaedit.edit(model, tok, memit_requests, ae_cfg, covs, ae_prefixes)
    with applied(model, unprojected.deltas):
        ae_null = metrics.evaluate(model, tok, memit_requests, memit_ref)
    out["AlphaEdit"] = {**_scores("AlphaEdit/10", ae_null), "AlphaEdit/10/disturbance_ratio": 1.0}

    # IKE: no context at all; its demonstrations: none (k = 0), computed for real
    from lfmlab.editing import ike

    no_context = {f"unedited_ike/{k}": float(v) for k, v in memit_null.as_dict().items()}
    out["IKE"] = {**no_context, **_scores("IKE: the new fact alone", memit_null)}
    fact_alone = bench.single(model, tok, memit_requests, ike.IKE(model, tok, W, ike.IKEConfig(k=0, seed=SEED)),
                              memit_ref)[0]
    out["IKE demonstrations"] = {**no_context, **_scores("IKE: the new fact alone", fact_alone),
                                 **_scores("IKE: with demonstrations", fact_alone)}

    # ROME's same-subject KL at weight 0: plain ROME with the notebook's smoke settings
    layer = wlm.card.notes["causal_trace"]["best_mlp_layer"]
    C = covariance.key_covariance(model, tok, layer)
    prefixes = rome.random_prefixes(model, tok, 5, (5, 10), seed=SEED)
    cfg = rome.RomeConfig(layer=layer, seed=SEED, anchor_same_subject=True, anchor_weight=0.0)
    out["ROME + same-subject KL"] = _scores("ROME + same-subject KL", bench.single(
        model, tok, requests, lambda q: rome.edit(model, tok, q, cfg, cov=C, prefixes=prefixes), ref)[0])

    held = {q.subject for q in requests} | {q.subject for q in memit_requests}
    untrained = mend.train(model, tok, W, mend.MendConfig(steps=0, seed=SEED), exclude_subjects=held)
    out["MEND"] = _scores("MEND", *bench.single(model, tok, requests, lambda q: untrained.edit(model, tok, q), ref))

    seq = memit_requests[:N_SEQ]
    seq_ref = metrics.Reference(memit_ref.neighbour_argmax[:N_SEQ], memit_ref.same_subject_hit[:N_SEQ])
    curve = bench.sequential(model, tok, seq, _EmptyCodebook(model), seq_ref, every=1)
    out["GRACE"] = {"GRACE/seq_latest": curve[-1]["latest"], "GRACE/seq_retention": curve[-1]["retention"]}
    out["T-Patcher"].update({f"T-Patcher/seq_{k}": curve[-1][k] for k in ("latest", "retention", "neighbourhood")})

    out["negation"] = {"negation/gap": 0.0, "negation/lam": 0.0}  # θ − 0·τ = θ: nothing forgotten

    # an editor that forgets to take its delta back: the model is changed afterwards
    name = next(n for n, _ in model.named_parameters())
    params = dict(model.named_parameters())
    before = params[name].detach().clone()
    with torch.no_grad():
        params[name].add_(1.0)
        unchanged = float(torch.equal(before, params[name]))
        params[name].copy_(before)
    out["restore"] = {"model/unchanged": unchanged}

    out["panel"] = {"panel/refused": _accepting_panel_refuses(model, tok, W)}
    return out


def _accepting_panel_refuses(model, tok, W) -> float:
    """The notebook's refusal test on a panel whose check accepts any subject."""
    from lfmlab.data.world import EditRequest
    from lfmlab.ui.editing import EditorPanel

    class Accepting(EditorPanel):
        def check(self):
            self._request = EditRequest(self.subject, self.relation, f"The capital of {self.subject} is",
                                        "Lima", self.new_object, (), (), ())

    panel = Accepting(model, tok, W, {"identity": lambda q: EditResult()})
    last = panel.result
    panel.subject = "Atlantis"
    panel.run()
    return float((not panel.ok) and "unknown subject" in panel.message and panel.result is last)


if __name__ == "__main__":
    import json
    import time

    start = time.perf_counter()
    print(json.dumps(null_measured(), indent=1))
    print(f"{time.perf_counter() - start:.1f}s")
