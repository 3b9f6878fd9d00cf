"""One interface for every editor, whether it changes weights or keeps a memory beside the model.

>>> with editor.applied(request) as model:      # one edit, then back to the unedited model
...     lm.top_k(model, tok, request.prompt)
>>> editor.add(r1); editor.add(r2)              # sequential editing: r2 computed on the model holding r1
>>> with editor.edited() as model:              # the model holding every added edit
...     metrics.evaluate(model, tok, [r1, r2], ref)
>>> editor.clear()                              # forget them all

* :class:`DeltaEditor` wraps a function ``request -> EditResult`` (FT, KN, ROME, MEMIT, MEND,
  AlphaEdit, whose ``reset`` forgets the earlier edits' keys). Its
  edits are weight deltas, added to the model only inside :meth:`Editor.edited` and summed over
  :meth:`Editor.add` calls; the model's own weights are never left changed.
* :class:`MemoryEditor` wraps a model with ``add(request)`` and ``clear()`` (SERAC, GRACE): the
  edited model is the wrapper, the base model is untouched.

No caller needs to know which kind it holds: notebook 07, the editing panel, :mod:`bench` and
``benchmarks/editing.py`` all use these four verbs. :func:`as_editor` turns a bare function or
memory model into an editor (the one place that looks at the kind).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from torch import nn

from lfmlab.data.world import EditRequest
from lfmlab.editing.base import Deltas, EditResult, applied, merge

__all__ = ["Editor", "DeltaEditor", "MemoryEditor", "as_editor"]


class Editor:
    """An editor of one base model. Subclasses implement :meth:`add`, :meth:`edited`, :meth:`clear`."""

    name: str = "editor"
    model: nn.Module

    def add(self, request: EditRequest) -> EditResult:
        """Make the edit on top of every edit added so far (``seconds`` is its compute time)."""
        raise NotImplementedError

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        """The model that holds every added edit, inside the block only."""
        raise NotImplementedError
        yield  # pragma: no cover

    def clear(self) -> None:
        """Forget every added edit: the model answers as the unedited one again."""
        raise NotImplementedError

    @contextmanager
    def applied(self, request: EditRequest) -> Iterator[nn.Module]:
        """This one edit alone (earlier edits are forgotten first): the edited model inside the
        block, the unedited model after it. The edit's :class:`EditResult` is in :attr:`last`."""
        self.clear()
        try:
            self.last = self.add(request)
            with self.edited() as model:
                yield model
        finally:
            self.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class DeltaEditor(Editor):
    """An editor that returns weight deltas: ``edit(request) -> EditResult``."""

    def __init__(self, name: str, model: nn.Module, edit: Callable[[EditRequest], EditResult],
                 reset: Callable[[], None] | None = None):
        self.name, self.model, self._edit, self._reset = name, model, edit, reset
        self.deltas: Deltas = {}

    def add(self, request: EditRequest) -> EditResult:
        with applied(self.model, self.deltas):          # computed on the model holding earlier edits
            result = self._edit(request)
        self.deltas = merge(self.deltas, result.deltas)
        return result

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        with applied(self.model, self.deltas) as model:
            yield model

    def clear(self) -> None:
        self.deltas = {}
        if self._reset is not None:      # an editor with its own state of earlier edits (AlphaEdit)
            self._reset()


class MemoryEditor(Editor):
    """An editor that keeps edits in a memory beside the frozen model (``add`` / ``clear``)."""

    def __init__(self, name: str, memory: nn.Module):
        self.name, self.memory = name, memory
        self.model = getattr(memory, "base", memory)

    def add(self, request: EditRequest) -> EditResult:
        start = time.perf_counter()
        info = self.memory.add(request) or {}
        return EditResult(info=info, seconds=time.perf_counter() - start)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        yield self.memory

    def clear(self) -> None:
        self.memory.clear()


def as_editor(model: nn.Module, editor, name: str | None = None) -> Editor:
    """``editor`` as an :class:`Editor` of ``model``: an editor as it is, a memory model (with
    ``add`` and ``clear``) as a :class:`MemoryEditor`, a function ``request -> EditResult`` as a
    :class:`DeltaEditor`."""
    if isinstance(editor, Editor):
        return editor
    if hasattr(editor, "add") and hasattr(editor, "clear"):
        return MemoryEditor(name or type(editor).__name__, editor)
    if callable(editor):
        return DeltaEditor(name or getattr(editor, "__name__", "editor"), model, editor)
    raise TypeError(f"not an editor: {editor!r} (give an Editor, a function request -> EditResult, "
                    "or a memory model with add() and clear())")
