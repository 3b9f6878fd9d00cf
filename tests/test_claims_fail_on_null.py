"""Every notebook claim fails when its method is replaced by a null method.

A claim (``lfmlab/<area>/claims.py``) judges the numbers a notebook measured. Here each claim is
fed the numbers of a recorded smoke run of its notebook (``tests/data/measured/<notebook>.seed0.json``,
written by ``benchmarks/claims_spread.py``) in which the results of the methods it is *about*
are replaced by what their **null method** measures, computed for real in this test: the
identity editor, an untrained MEND, λ = 0, an empty datastore, random search at BBT's budget,
tuning whose parameters never move, random neighbours for a search,
one ensemble member alone, the identity permutation, no merge. The claim must then fail,
and on finite numbers (a claim that fails only because a value is missing proves nothing).

The recorded run must also pass every claim it can judge: the same claims, the same numbers.
"""
import json

import null_methods_arena
import null_methods_distill
import null_methods_editing
import null_methods_meta
import null_methods_retrieval
import null_methods_reuse
import null_methods_tuning
import pytest
from harness import ROOT

from lfmlab import claims as C

AREAS = {m.NOTEBOOK: m for m in (null_methods_tuning, null_methods_retrieval, null_methods_distill,
                                 null_methods_reuse, null_methods_meta, null_methods_editing,
                                 null_methods_arena)}
CASES = [(nb, c) for nb, m in AREAS.items() for c in m.CLAIMS]


def reference(notebook: str) -> dict[str, float]:
    path = ROOT / "tests" / "data" / "measured" / f"{notebook}.seed0.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def nulls():
    """Null-method measurements per notebook, each computed once: {notebook: {method: {key: value}}}."""
    return {nb: m.null_measured() for nb, m in AREAS.items()}


@pytest.mark.parametrize("notebook", sorted(AREAS))
def test_recorded_run_passes_its_claims(notebook):
    judged, _ = C.select(AREAS[notebook].CLAIMS, smoke=True)
    bad = C.failures(judged, reference(notebook))
    assert not bad, [c.line(reference(notebook)) for c in bad]


@pytest.mark.parametrize("notebook", sorted(AREAS))
def test_every_claim_names_a_method_with_a_null(notebook, nulls):
    for claim in AREAS[notebook].CLAIMS:
        assert claim.about, f"{claim.text!r} names no method to replace by a null"
        missing = [m for m in claim.about if m not in nulls[notebook]]
        assert not missing, f"{claim.text!r}: no null method measured for {missing}"


@pytest.mark.parametrize("notebook,claim", CASES, ids=[f"{nb[:2]}:{c.text[:60]}" for nb, c in CASES])
def test_claim_fails_on_its_null_method(notebook, claim, nulls):
    measured = dict(reference(notebook))
    for method in claim.about:
        measured.update(nulls[notebook][method])
    value, bound = claim.measure(measured)
    assert value == value and bound == bound, (
        f"{claim.text!r}: value {value}, threshold {bound} under the null: a missing number is no proof")
    assert not claim.holds(measured), f"{claim.text!r} holds for the null method: {claim.line(measured)}"
