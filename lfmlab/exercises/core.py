"""The exercise contract: a stub the learner fills, the package's own reference, randomised cases,
and the plausible wrong answers a checker recognises and names.

A check runs the learner's function and the reference on every case (several shapes, seeds and
edge cases). A case passes when the two agree to ``atol``/``rtol``. When they do not, the
learner's output is compared with each known mistake's output on the same case: a match raises
``AssertionError`` with that mistake's message (what is wrong and how to fix it); no match
raises a generic one with the case's shapes and the largest error. A stub that still raises
``NotImplementedError`` is reported as not done yet.
"""
from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch

Case = dict[str, Any]


@dataclass(frozen=True)
class Exercise:
    """One exercise. ``stub``: the signature and docstring (with the paper's equation and the
    shapes); ``body``: the solution lines that follow the stub in the master notebook;
    ``reference``: the package's implementation behind the same signature; ``cases()``: the
    inputs the checker tries; ``mistakes``: message -> a plausible wrong answer."""

    name: str
    section: str                      # the section notebook: "02" ... "07"
    title: str
    difficulty: int                   # 1 (one idea) ... 3 (several steps, easy to get subtly wrong)
    minutes: int
    stub: str
    body: str
    hints: tuple[str, str]
    reference: Callable[..., Any]
    cases: Callable[[], Iterable[Case]]
    mistakes: Mapping[str, Callable[..., Any]]
    equation: str = ""                # LaTeX, shown above the stub
    atol: float = 1e-5
    rtol: float = 1e-4
    on_error: str = ""                # a hint added when the learner's code raises
    compare: Callable[[Any, Any, "Exercise"], bool] | None = None
    grad_of: tuple[str, ...] = ()     # inputs whose gradients (of the output's sum) are checked too
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 1 <= self.difficulty <= 3:
            raise ValueError(f"{self.name}: difficulty is 1, 2 or 3, got {self.difficulty}")
        if len(self.mistakes) < 2:
            raise ValueError(f"{self.name}: an exercise names at least two plausible wrong answers")

    @property
    def function_name(self) -> str:
        return self.stub.split("def ", 1)[1].split("(", 1)[0]

    def source(self, solution: bool, marks: bool = True) -> str:
        """The code cell: the stub, then the solution (between nbgrader's marks) or the stub body."""
        indent = "    "
        if solution:
            inner = self.body.rstrip("\n") + "\n"
            if marks:
                inner = f"{indent}### BEGIN SOLUTION\n{inner}{indent}### END SOLUTION\n"
        else:
            inner = f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"
        return self.stub.rstrip("\n") + "\n" + inner

    def same(self, a: Any, b: Any) -> bool:
        if self.compare is not None:
            return self.compare(a, b, self)
        return close(a, b, self.atol, self.rtol)


def close(a: Any, b: Any, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Equal tensors (same shape, values to tolerance), or equal structures of them."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape:
            return False
        if a.dtype == torch.bool or b.dtype == torch.bool or not a.is_floating_point():
            return bool(torch.equal(a, b.to(a.dtype)))
        return bool(torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol,
                                   equal_nan=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(close(a[k], b[k], atol, rtol) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(close(x, y, atol, rtol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= atol + rtol * abs(b)
    return a == b


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone().requires_grad_(value.requires_grad)
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def _clone(case: Case) -> Case:
    """A fresh copy of a case's tensors (inside dicts and lists too), so that a function that
    writes into its inputs cannot change what the next function sees."""
    return {k: _copy(v) for k, v in case.items()}


def _describe(case: Case) -> str:
    parts = []
    for k, v in case.items():
        if isinstance(v, torch.Tensor):
            parts.append(f"{k}: {list(v.shape)}")
        elif isinstance(v, Mapping):
            inner = ", ".join(f"{n}: {list(t.shape)}" for n, t in v.items() if isinstance(t, torch.Tensor))
            parts.append(f"{k}: {{{inner}}}")
        elif isinstance(v, (int, float, str, bool)):
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def _error(a: Any, b: Any) -> str:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            return f"the result has keys {sorted(a)}; expected {sorted(b)}"
        wrong = [k for k in b if not close(a[k], b[k])]
        return f"entry {wrong[0]!r}: {_error(a[wrong[0]], b[wrong[0]])}" if wrong else "a wrong entry"
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and len(a) > 1:
        if not close(a[0], b[0]):
            return _error(a[0], b[0])
        return "the values are right but the gradients are not"
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            return f"the result has shape {list(a.shape)}; expected {list(b.shape)}"
        diff = (a.detach().double() - b.detach().double()).abs()
        return f"largest difference from the reference {diff.max().item():.3g}"
    return f"got {type(a).__name__} {str(a)[:80]}; expected {type(b).__name__} {str(b)[:80]}"


def _call(ex: Exercise, fn: Callable[..., Any], case: Case) -> Any:
    """``fn(**case)``; with ``ex.grad_of``, (the output, the gradients of its sum with respect to
    those inputs), so that a function with the right values but the wrong backward pass (a
    missing detach, say) is told apart."""
    case = _clone(case)
    if not ex.grad_of:
        return fn(**case)
    for name in ex.grad_of:
        case[name] = case[name].detach().requires_grad_(True)
    out = fn(**case)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return (out,) + (None,) * len(ex.grad_of)
    grads = torch.autograd.grad(out.sum(), [case[n] for n in ex.grad_of], allow_unused=True)
    return (out.detach(), *[g if g is not None else torch.zeros_like(case[n])
                            for g, n in zip(grads, ex.grad_of)])


def run_check(ex: Exercise, fn: Callable[..., Any]) -> int:
    """Check ``fn`` against ``ex``; return the number of cases on success, raise AssertionError."""
    __tracebackhide__ = True  # noqa: F841
    if not callable(fn):
        raise AssertionError(f"{ex.name}: check() needs your function, e.g. "
                             f"check({ex.name!r}, {ex.function_name}); got {type(fn).__name__}")
    n = 0
    for i, case in enumerate(ex.cases()):
        expected = _call(ex, ex.reference, case)
        try:
            got = _call(ex, fn, case)
        except NotImplementedError:
            raise AssertionError(f"{ex.name}: not done yet. Replace `raise NotImplementedError()` in "
                                 f"{ex.function_name} with your code, run the cell, then check again."
                                 ) from None
        except Exception as err:  # noqa: BLE001  (the learner's bug, reported with its case)
            hint = f" {ex.on_error}" if ex.on_error else ""
            raise AssertionError(f"{ex.name}: your function raised {type(err).__name__}: {err} "
                                 f"(case {i + 1}: {_describe(case)}).{hint}") from None
        if ex.same(got, expected):
            n += 1
            continue
        for message, wrong in ex.mistakes.items():
            try:
                mistaken = _call(ex, wrong, case)
            except Exception:  # noqa: BLE001  (a mistake that cannot run on this case)
                continue
            if not ex.same(mistaken, expected) and ex.same(got, mistaken):
                raise AssertionError(f"{ex.name}: {message} (case {i + 1}: {_describe(case)})")
        raise AssertionError(f"{ex.name}: wrong result on case {i + 1} ({_describe(case)}): "
                             f"{_error(got, expected)}. The hints (below the exercise) give the steps.")
    return n


def dedent_source(fn: Callable[..., Any]) -> str:
    return textwrap.dedent(inspect.getsource(fn))
