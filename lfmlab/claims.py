"""Claims: what a notebook teaches, as statements a test can run (DESIGN.md §3, step 6).

A :class:`Claim` is a statement, a measured value and a threshold. A notebook collects every
number it measured into one flat dict (``measured["ROME/efficacy"] = 1.0``), and its checks
cell calls :func:`check`, which prints each claim with its value and asserts them all:

    ✔ ROME: efficacy                                   1.00 ≥ 0.90

Each area keeps its notebook's claims in ``lfmlab/<area>/claims.py`` (``CLAIMS``), so that
``tests/test_claims_fail_on_null.py`` can feed the *same* claims the numbers of a **null
method** (no update, an untrained editor, λ = 0, random search at equal budget) and show that
every one of them fails. A claim that a null method passes teaches nothing.

Rules for writing one:

* judge a method against the baseline it must beat (the unedited model, the zero-shot base,
  λ = 0), with a margin set from the spread measured over seeds;
* never judge on the data that chose a hyperparameter;
* a missing or non-finite value fails the claim (NaN never passes a comparison here).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

Measured = Mapping[str, float]
Quantity = Union[float, int, str, Callable[[Measured], float]]

_OPS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    ">=": (operator.ge, "≥"), ">": (operator.gt, ">"),
    "<=": (operator.le, "≤"), "<": (operator.lt, "<"),
}


class ClaimFailed(AssertionError):
    """One or more claims of a notebook did not hold; the message lists them with their values."""


def _resolve(q: Quantity, measured: Measured) -> float:
    if isinstance(q, str):
        if q not in measured:
            raise KeyError(q)
        return float(measured[q])
    if callable(q):
        return float(q(measured))
    return float(q)


@dataclass(frozen=True)
class Claim:
    """``value op threshold``, e.g. ``Claim("ROME: efficacy", "ROME/efficacy", ">=", 0.9, about=("ROME",))``.

    ``value`` and ``threshold`` are each a number, a key of the measured dict, or a function of
    the measured dict. ``about`` names the methods whose results the claim judges: the null
    test replaces exactly those with their null method. ``full_only`` claims need a default or
    full run (a smoke run is too short to show them) and are reported as skipped in smoke mode. ``when``
    names a measured key that says whether the claim applies at all (e.g. an optional library is
    installed): when it is 0 the claim is reported as not applicable; when it is missing, the
    claim is judged (and a missing value fails).
    """

    text: str
    value: Quantity
    op: str
    threshold: Quantity
    about: tuple[str, ...] = ()
    full_only: bool = False
    when: str | None = None
    fmt: str = ".2f"

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"claim {self.text!r}: op must be one of {sorted(_OPS)}, not {self.op!r}")

    def measure(self, measured: Measured) -> tuple[float, float]:
        """(value, threshold); NaN for a quantity that is missing from ``measured``."""
        out = []
        for q in (self.value, self.threshold):
            try:
                out.append(_resolve(q, measured))
            except (KeyError, ValueError, TypeError, ZeroDivisionError):
                out.append(float("nan"))
        return out[0], out[1]

    def holds(self, measured: Measured) -> bool:
        value, bound = self.measure(measured)
        if not (math.isfinite(value) and math.isfinite(bound)):
            return False
        return bool(_OPS[self.op][0](value, bound))

    def line(self, measured: Measured, width: int = 66) -> str:
        """``✔ text  value ≥ threshold`` (✘ when it does not hold)."""
        value, bound = self.measure(measured)
        mark = "✔" if self.holds(measured) else "✘"
        return f"{mark} {self.text:<{width}s} {value:{self.fmt}} {_OPS[self.op][1]} {bound:{self.fmt}}"


def applies(claim: Claim, measured: Measured) -> bool:
    """False only when the claim's ``when`` key is measured and 0."""
    return claim.when is None or claim.when not in measured or bool(measured[claim.when])


def select(claims: Iterable[Claim], smoke: bool,
           measured: Measured | None = None) -> tuple[list[Claim], list[Claim]]:
    """(claims judged in this run, claims skipped: they need a default or full run, or do not apply)."""
    claims = [c for c in claims if measured is None or applies(c, measured)]
    if not smoke:
        return claims, []
    return [c for c in claims if not c.full_only], [c for c in claims if c.full_only]


def failures(claims: Iterable[Claim], measured: Measured, smoke: bool = False) -> list[Claim]:
    """The judged claims that do not hold on ``measured``."""
    judged, _ = select(claims, smoke, measured)
    return [c for c in judged if not c.holds(measured)]


def check(claims: Iterable[Claim], measured: Measured, smoke: bool = False, seed: int | None = None,
          strict: bool = True) -> list[str]:
    """Print every claim with its measured value; raise :class:`ClaimFailed` if any fails.

    Returns the printed lines. ``strict=False`` prints without raising (for exploring).
    """
    claims = list(claims)
    judged, skipped = select(claims, smoke, measured)
    absent = [c for c in claims if not applies(c, measured)]
    lines = [c.line(measured) for c in judged]
    if seed is not None:
        lines.insert(0, f"claims at SEED = {seed}{' (smoke run)' if smoke else ''}:")
    if skipped:
        lines.append("skipped in the smoke run (they need a default or full run): "
                     + "; ".join(c.text for c in skipped))
    if absent:
        lines.append("not applicable here: " + "; ".join(f"{c.text} ({c.when} = 0)" for c in absent))
    print("\n".join(lines))
    bad = [c for c in judged if not c.holds(measured)]
    if bad and strict:
        raise ClaimFailed("claims that do not hold: " + "; ".join(c.line(measured, 0) for c in bad))
    return lines


def flatten(tree: Mapping, prefix: str = "") -> dict[str, float]:
    """``{"ROME": {"efficacy": 1.0}}`` -> ``{"ROME/efficacy": 1.0}`` (numbers and bools only)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        elif isinstance(value, (bool, int, float)):
            out[name] = float(value)
    return out


def save(measured: Measured, path: str) -> None:
    """Write the measured numbers as JSON (the seed-spread script and the null test read them)."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({k: float(v) for k, v in measured.items()}, indent=1, sort_keys=True))
