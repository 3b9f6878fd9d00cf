"""Null method of notebook 08 (the knowledge-update arena), measured for real on the smoke run's
updates at SEED 0 (tests/test_claims_fail_on_null.py feeds it to lfmlab.arena.claims.CLAIMS).

Every contestant's null is the ``no update`` contestant (:class:`lfmlab.arena.contestants.NoUpdate`):
it takes the same updates and changes nothing, so its numbers are the unedited model's. It is
reversible by construction: the claims fail on its efficacy, not on a missing number.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch)

# isort: split
from harness import print_nulls

from lfmlab.arena.claims import CLAIMS  # noqa: F401  (read by the driver)

NOTEBOOK = "08_knowledge_update_arena"
SEED = 0
N_UPDATES = 3          # the notebook's smoke size
KEYS = ("efficacy", "paraphrase", "neighbourhood", "same_subject", "portability", "reversible")


def null_measured() -> dict[str, dict[str, float]]:
    from lfmlab import zoo
    from lfmlab.arena import CONTESTANTS, jobs, scorer
    from lfmlab.arena.contestants import NoUpdate
    from lfmlab.data import world

    wlm = zoo.load("world-lm", device="cpu")
    model, tok, W = wlm.model, wlm.tokenizer, world.load()
    out: dict[str, dict[str, float]] = {name: {} for name in CONTESTANTS}
    for job in jobs.JOBS:
        ups = jobs.updates(job, model, tok, W, N_UPDATES, SEED)
        card = scorer.score(NoUpdate(model), tok, W, ups, scorer.ACCESS[-1])
        for name, info in CONTESTANTS.items():
            if job in info.jobs:
                out[name].update({f"{job}/{name}/{k}": float(getattr(card, k)) for k in KEYS})
    return out


if __name__ == "__main__":
    print_nulls(null_measured)
