"""Bad input never becomes a result: one validation layer for every method and panel.

Each function checks one kind of value at a method's boundary and returns it cleaned, or raises
:class:`BadValue`, a ``ValueError`` whose message names the field, the value, what is allowed
and how to fix it. Nothing is changed when it raises. Panels show the message as it is.

* :func:`number` — finite, in range (NaN and ±∞ never pass: ``NaN < 0`` is False);
* :func:`text` — non-empty, no control characters, within the model's context;
* :func:`choice` — a known name, matched without regard to case, with the closest names suggested;
* :func:`items` — a non-empty list (empty means empty, never "all");
* :func:`finite` — a method's output (weights, losses) is finite, else :class:`NotFinite`.
"""
from __future__ import annotations

import difflib
import math
import unicodedata
from typing import Iterable, Mapping, Sequence, TypeVar

from lfmlab.core.types import Tokenizer

T = TypeVar("T")


class BadValue(ValueError):
    """A value a method cannot honour; the message says which field, what is allowed, and the fix."""

    def __init__(self, field: str, value, allowed: str, fix: str = ""):
        self.field, self.value, self.allowed, self.fix = field, value, allowed, fix
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "…"
        msg = f"{field} = {shown}: {allowed}."
        super().__init__(msg + (f" {fix}" if fix else ""))


class NotFinite(ValueError):
    """A method produced NaN or ∞ (weights or a loss): its result is not usable."""


def number(field: str, value, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False, integer: bool = False, fix: str = "") -> float:
    """``value`` as a float (an int when ``integer``), finite and within [lo, hi] (open ends optional)."""
    lo_b = "(" if lo is None or lo_open else "["
    hi_b = ")" if hi is None or hi_open else "]"
    span = f"{lo_b}{'-∞' if lo is None else f'{lo:g}'}, {'∞' if hi is None else f'{hi:g}'}{hi_b}"
    kind = "a whole number" if integer else "a finite number"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise BadValue(field, value, f"must be {kind} in {span}", fix)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise BadValue(field, value, f"must be {kind} in {span}", fix) from None
    if not math.isfinite(x):
        raise BadValue(field, value, f"must be {kind} in {span} (NaN and ∞ are never valid)", fix)
    if integer and x != int(x):
        raise BadValue(field, value, f"must be {kind} in {span}", fix)
    if (lo is not None and (x < lo or (lo_open and x == lo))) or (hi is not None and (x > hi or (hi_open and x == hi))):
        if hi is None:
            raise BadValue(field, value, f"must be {'>' if lo_open else '>='} {lo:g}", fix)
        if lo is None:
            raise BadValue(field, value, f"must be {'<' if hi_open else '<='} {hi:g}", fix)
        raise BadValue(field, value, f"outside {span}", fix)
    return int(x) if integer else x


def numbers(field: str, values: Iterable, lo: float | None = None, hi: float | None = None, **kw) -> list[float]:
    """:func:`number` for each of ``values`` (a scalar is one value)."""
    values = [values] if isinstance(values, (int, float)) else list(values)
    return [number(f"{field}[{i}]" if len(values) > 1 else field, v, lo, hi, **kw) for i, v in enumerate(values)]


def text(field: str, value, *, tokenizer: Tokenizer | None = None, max_tokens: int | None = None, fix: str = "") -> str:
    """``value`` stripped: a non-empty string without control characters, at most ``max_tokens``
    tokens of ``tokenizer`` when both are given."""
    if not isinstance(value, str):
        raise BadValue(field, value, "must be text", fix)
    bad = sorted({repr(c) for c in value if unicodedata.category(c) in ("Cc", "Cf") and c not in " "})
    if bad:
        raise BadValue(field, value, f"contains control characters ({', '.join(bad)})",
                       fix or "Type plain text: letters, digits, spaces and punctuation.")
    value = value.strip()
    if not value:
        raise BadValue(field, value, "empty; it must be non-empty text", fix or "Type some text.")
    if tokenizer is not None and max_tokens is not None:
        n = len(tokenizer(value)["input_ids"])
        if n > max_tokens:
            raise BadValue(field, value, f"{n} tokens long, and the model reads at most {max_tokens}",
                           fix or f"Shorten it to at most {max_tokens} tokens.")
    return value


def choice(field: str, value, choices: Iterable[T] | Mapping[T, object], *, fix: str = "") -> T:
    """The element of ``choices`` equal to ``value``, compared without regard to case or spaces at the
    ends; else a message naming the closest choices (or all of them, when there are few)."""
    options = list(choices)
    if isinstance(value, str) and value.strip():
        key = value.strip().casefold()
        for option in options:
            if str(option).casefold() == key:
                return option
    names = [str(o) for o in options]
    if isinstance(value, str) and not value.strip():
        allowed = "empty"
    else:
        allowed = f"not one of the {len(names)} known names"
    close = difflib.get_close_matches(str(value).strip().casefold(), [n.casefold() for n in names], n=3, cutoff=0.6)
    close = [n for c in close for n in names if n.casefold() == c][:3]
    if close:
        hint = "Did you mean " + " or ".join(repr(c) for c in close) + "?"
    elif len(names) <= 12:
        hint = "Choose one of: " + ", ".join(names) + "."
    else:
        hint = f"Choose one of: {', '.join(names[:8])}, … ({len(names)} in all)."
    raise BadValue(field, value, allowed, fix or hint)


def items(field: str, values: Sequence[T] | None, *, fix: str = "") -> list[T]:
    """``values`` as a non-empty list: an empty list is refused, never read as "everything"."""
    out = list(values) if values is not None else []
    if not out:
        raise BadValue(field, values, "empty", fix or f"Give at least one {field.rstrip('s')}.")
    return out


def finite(what: str, *tensors_or_numbers) -> None:
    """Raise :class:`NotFinite` when any tensor (or state dict of tensors, or number) holds NaN or ∞."""
    import torch

    def bad(x) -> bool:
        if isinstance(x, Mapping):
            return any(bad(v) for v in x.values())
        if isinstance(x, torch.Tensor):
            return x.is_floating_point() and not bool(torch.isfinite(x).all())
        if isinstance(x, (int, float)):
            return not math.isfinite(x)
        return False

    if any(bad(x) for x in tensors_or_numbers):
        raise NotFinite(f"{what} is not finite (NaN or ∞): the result is not usable. Lower the learning rate "
                        "or the scaling factor, or check the inputs for NaN.")


def model_finite(what: str, model) -> None:
    """:func:`finite` over every parameter of ``model``."""
    finite(what, {n: p.detach() for n, p in model.named_parameters()})
