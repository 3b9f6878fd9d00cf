"""Forward hooks as context managers: read or rewrite a module's output, then clean up.

Used by causal tracing, ROME/MEMIT (keys and values at a layer), kNN-LM (context vectors).
Blocks and attention modules may return tuples; the first element is the hidden state.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output, new):
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextmanager
def capture(model: nn.Module, names: list[str], inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output (or with ``inputs=True`` the first input) of each named module.

    >>> with capture(model, ["transformer.h.0.mlp"]) as seen:
    ...     model(ids)
    >>> seen["transformer.h.0.mlp"].shape  # [B, T, D]
    """
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        def hook(mod, args, output, name=name):
            seen[name] = args[0] if inputs else _first(output)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@contextmanager
def rewrite(model: nn.Module, edits: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace each named module's (first) output by ``fn(output)`` while the block runs."""
    handles = []
    for name, fn in edits.items():
        def hook(mod, args, output, fn=fn):
            return _replace_first(output, fn(_first(output)))
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Reached(Exception):
    """Raised by :func:`run_until`'s hook to end the forward pass at the module it reads."""


def run_until(model: nn.Module, name: str, inputs: bool = False, **batch) -> torch.Tensor:
    """``model(**batch)`` stopped as soon as module ``name`` has run: its output (or with
    ``inputs=True`` its first input). Nothing after that module is computed, so reading an
    early layer costs only the layers up to it."""
    seen: dict[str, torch.Tensor] = {}

    def hook(mod, args, output):
        seen["x"] = args[0] if inputs else _first(output)
        raise _Reached

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        model(**batch)
    except _Reached:
        pass
    finally:
        handle.remove()
    if "x" not in seen:
        raise RuntimeError(f"module {name!r} did not run in the forward pass")
    return seen["x"]
