"""The claims mechanism (lfmlab.claims): a claim fails on NaN, on a missing value and on a
wrong comparison; check() prints every claim with its value and raises on a failure."""
import math

import pytest

from lfmlab import claims as C


def test_a_claim_compares_its_value_with_its_threshold():
    c = C.Claim("efficacy", "m/eff", ">=", 0.9, about=("m",))
    assert c.holds({"m/eff": 0.95}) and not c.holds({"m/eff": 0.85})
    assert c.measure({"m/eff": 0.95}) == (0.95, 0.9)
    assert C.Claim("gap", lambda m: m["a"] - m["b"], ">", "floor")\
        .holds({"a": 1.0, "b": 0.2, "floor": 0.5})


@pytest.mark.parametrize("measured", [{}, {"m/eff": math.nan}, {"m/eff": math.inf}, {"m/eff": "x"}])
def test_missing_or_non_finite_values_fail(measured):
    c = C.Claim("efficacy", "m/eff", ">=", 0.0)
    assert not c.holds(measured)
    assert c.line(measured).startswith("✘")


def test_an_unknown_operator_is_refused():
    with pytest.raises(ValueError, match="op must be one of"):
        C.Claim("x", "a", "=>", 1.0)


def test_check_prints_each_claim_and_raises_on_a_failure(capsys):
    cl = [C.Claim("holds", "a", ">=", 0.5), C.Claim("fails", "b", "<", 0.1),
          C.Claim("needs the full run", "c", ">", 0, full_only=True),
          C.Claim("not here", "d", ">", 0, when="has_d")]
    with pytest.raises(C.ClaimFailed, match="fails"):
        C.check(cl, {"a": 0.7, "b": 0.3, "has_d": 0}, smoke=True, seed=3)
    out = capsys.readouterr().out
    assert "SEED = 3" in out and "✔ holds" in out and "✘ fails" in out
    assert "needs the full run" in out.split("skipped")[1] and "not applicable" in out
    lines = C.check(cl[:1], {"a": 0.7})
    assert len(lines) == 1 and "0.70 ≥ 0.50" in lines[0]


def test_flatten_and_save_round_trip(tmp_path):
    import json

    flat = C.flatten({"ROME": {"efficacy": 1.0, "n": 3}, "ok": True, "skip": "text"})
    assert flat == {"ROME/efficacy": 1.0, "ROME/n": 3.0, "ok": 1.0}
    C.save(flat, str(tmp_path / "m" / "x.json"))
    assert json.loads((tmp_path / "m" / "x.json").read_text()) == flat
