"""The knowledge-update arena (DESIGN.md §1: above the method areas): every LFM family updates
the same facts in the same model, and one scorer grades them all.

* :mod:`lfmlab.arena.jobs`: the two jobs, *change* known facts and *add* unknown ones;
* :mod:`lfmlab.arena.contestants`: one adapter per method, and the registry ``CONTESTANTS``;
* :mod:`lfmlab.arena.scorer`: quality, portability, perplexity, cost, footprint, latency,
  reversibility.
"""
from lfmlab.arena.contestants import CONTESTANTS, Contestant, make
from lfmlab.arena.jobs import JOBS, Update, add, change, updates
from lfmlab.arena.scorer import ACCESS, Scorecard, score

__all__ = ["ACCESS", "CONTESTANTS", "Contestant", "JOBS", "Scorecard", "Update", "add", "change", "make", "score",
           "updates"]
