"""One row per method: the contract every area's ``METHODS`` registry follows.

Each method area (``lfmlab.tuning``, ``retrieval``, ``distill``, ``reuse``, ``meta``, ``editing``)
exposes ``METHODS: dict[str, MethodInfo]`` in its ``__init__``. Panels, notebooks and benchmarks read
the registry, so adding a method is one module plus one row. A row says what the method is (its
paper and survey section), how to call it (``run``, and the config dataclass it takes, whose field
comments are the hyperparameters' help), what it returns, and which notebook teaches it.

>>> from lfmlab import editing
>>> editing.METHODS["ROME"].run            # lfmlab.editing.rome.edit
>>> print(registry.table(editing.METHODS))  # a Markdown table for a notebook
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["MethodInfo", "table", "hyperparameters"]


@dataclass(frozen=True)
class MethodInfo:
    """A method of an area.

    ``run`` is the entry point; ``config`` the dataclass of its hyperparameters (``None`` when it
    takes plain arguments); ``result`` the type ``run`` returns; ``notebook`` the notebook that
    teaches it and ``section`` the survey section. ``extra`` holds what one area needs beyond the
    common contract (the editing area's ``make``, the tuning area's size knob).
    """

    name: str
    summary: str
    paper: str
    section: str
    run: Callable[..., Any]
    result: type
    notebook: str
    config: type | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        """An area's own fields (``extra``) read as attributes: ``METHODS["LoRA"].deploy``."""
        extra = self.__dict__.get("extra", {})
        if key in extra:
            return extra[key]
        raise AttributeError(f"{type(self).__name__} {self.__dict__.get('name', '?')!r} has no field {key!r}")

    @property
    def module(self) -> str:
        """The module that implements it (named after the method)."""
        return getattr(self.run, "__module__", "?")


def hyperparameters(info: MethodInfo) -> dict[str, Any]:
    """name -> default of each field of the method's config dataclass ({} without one)."""
    if info.config is None or not dataclasses.is_dataclass(info.config):
        return {}
    out = {}
    for f in dataclasses.fields(info.config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def table(methods: Mapping[str, MethodInfo]) -> str:
    """The registry as a Markdown table: method, what it does, paper, survey section, module."""
    lines = ["| method | what it does | paper | survey | module |", "|---|---|---|---|---|"]
    lines += [f"| {m.name} | {m.summary} | {m.paper} | {m.section} | `{m.module}` |" for m in methods.values()]
    return "\n".join(lines)
