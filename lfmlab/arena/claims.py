"""What notebook 08 (the knowledge-update arena) claims, as statements a test can run
(:mod:`lfmlab.claims`).

One claim per contestant and job: **the contestant beats its null, the unedited model (no
update), on the job it is entered for, and leaves the model as it found it**. Quality is the
mean of efficacy and paraphrase (the y axis of the notebook's Pareto figure: an update that
sticks and carries to new wordings); the claim's value is the gain in quality over the null,
or −1 when the contestant is not reversible:

    quality − quality_no-update ≥ margin,   quality = (efficacy + paraphrase) / 2.

The null method (``tests/null_methods_arena.py``) is the :class:`~lfmlab.arena.contestants.NoUpdate`
contestant scored on the same updates: its efficacy is the unedited model's (≈ 0 on *change*,
exactly 0 on *add*, where the old object is the model's own best guess), so every claim fails on
it. The margin, 0.2, was set from the smoke runs' spread over SEED 0-4 (3 updates per job): the
smallest gains measured were 0.28 (IKE on *add*) and 0.33 (AlphaEdit and MEND on *change*). IKE
on *change* is the exception, with a margin of 0.1: its gain ranged 0.17-0.75 (with
demonstrations IKE trades efficacy for locality on world-lm, as notebook 07 shows, and gains
mostly on the paraphrases).

The cross-family comparisons (which family wins on quality, locality, cost) are *findings*: the
notebook prints them as measured, whichever way they come out, and claims nothing about them.
"""
from __future__ import annotations

from lfmlab.arena.contestants import CONTESTANTS
from lfmlab.arena.jobs import JOBS
from lfmlab.claims import Claim

MARGIN = 0.2
MARGINS = {("change", "IKE"): 0.1}      # (job, contestant) -> its own margin, from its spread


def quality(m, job: str, name: str) -> float:
    return (float(m[f"{job}/{name}/efficacy"]) + float(m[f"{job}/{name}/paraphrase"])) / 2


def gain(job: str, name: str):
    """Quality over the no-update null's, or -1 if the contestant does not leave the model as it was."""
    def value(m):
        if float(m[f"{job}/{name}/reversible"]) != 1.0:
            return -1.0
        return quality(m, job, name) - quality(m, job, "no update")
    return value


CLAIMS: list[Claim] = [
    Claim(f"{name} on {job}: quality ≥ no update + {MARGINS.get((job, name), MARGIN)}, reversible",
          gain(job, name), ">=", MARGINS.get((job, name), MARGIN), about=(name,))
    for job in JOBS for name, info in CONTESTANTS.items() if job in info.jobs
]
