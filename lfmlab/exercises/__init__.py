"""Exercises for course labs: the learner writes the heart of a method, a checker says what is wrong.

    from lfmlab import exercises
    exercises.names()                      # every exercise, by section
    exercises.check("kd_loss", kd_loss)    # one line on success; AssertionError naming the mistake
    exercises.solution("kd_loss")          # the reference: the package's own implementation
    exercises.show("kd_loss")              # title, difficulty, time, equation and stub

Each exercise runs the learner's function and the reference on several randomised cases (shapes,
seeds, edge cases) in well under two seconds on a CPU; the common mistakes of each are recognised
and named. ``python -m lfmlab.exercises build DIR`` writes the student and solution notebooks
(see :mod:`lfmlab.exercises.build`). :mod:`lfmlab.exercises.quiz` holds one "predict, then run"
question per section notebook.
"""
from __future__ import annotations

from typing import Any, Callable

from lfmlab.exercises import distill, editing, meta, retrieval, reuse, tuning
from lfmlab.exercises.core import Exercise, run_check

SECTIONS = {"02": "model tuning", "03": "database augmentation", "04": "model distillation",
            "05": "model reuse", "06": "meta learning", "07": "model editing"}
REGISTRY: dict[str, Exercise] = {
    ex.name: ex for module in (tuning, retrieval, distill, reuse, meta, editing) for ex in module.EXERCISES
}


def names(section: str | None = None) -> list[str]:
    """The exercises, in notebook order; ``section="04"`` gives one notebook's."""
    if section is not None and section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; the exercise sections are {', '.join(SECTIONS)}")
    return [n for n, ex in REGISTRY.items() if section is None or ex.section == section]


def get(name: str) -> Exercise:
    if not isinstance(name, str) or name not in REGISTRY:
        raise KeyError(f"no exercise {name!r}; exercises.names() lists them: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def solution(name: str) -> Callable[..., Any]:
    """The reference for ``name``: the package's own implementation behind the exercise's signature."""
    return get(name).reference


def check(name: str, fn: Callable[..., Any], quiet: bool = False) -> None:
    """Run ``fn`` against the reference on every case. Prints one line on success; raises
    ``AssertionError`` saying what is wrong otherwise."""
    __tracebackhide__ = True  # noqa: F841  (IPython and pytest show the message, not this frame)
    ex = get(name)
    n = run_check(ex, fn)
    if not quiet:
        print(f"✓ {name}: correct on all {n} cases ({ex.title})")


def show(name: str) -> str:
    """A plain-text card: title, difficulty, time, equation, stub."""
    ex = get(name)
    return (f"{ex.title}  [difficulty {ex.difficulty}/3, ~{ex.minutes} min, notebook {ex.section}]\n"
            f"{ex.equation}\n\n{ex.stub}")


__all__ = ["Exercise", "SECTIONS", "check", "get", "names", "show", "solution"]
