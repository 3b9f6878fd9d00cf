"""The arena's contestant interface and its weight-change adapters.

A :class:`Contestant` takes :class:`~lfmlab.arena.jobs.Update` objects one after another
(``add``), yields the model that knows them (``edited``), forgets them (``clear``) and says how
many bytes they add (``footprint``). The base model is never left changed:

* :class:`NoUpdate`: the null, which changes nothing (the unedited model);
* :class:`EditorContestant`: an editor of notebook 07 (:class:`lfmlab.editing.editor.Editor`);
* :class:`DeltaContestant`: updates as weight changes from a function (fine-tuning, LoRA,
  context distillation), summed and added only inside ``edited()``;
* :class:`AtOnceContestant`: all updates in one solve at ``commit()`` (MEMIT's batch edit).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from torch import nn

from lfmlab.arena.jobs import Update
from lfmlab.arena.scorer import footprint
from lfmlab.editing.base import Deltas, applied, merge
from lfmlab.editing.editor import Editor

__all__ = ["Contestant", "NoUpdate", "EditorContestant", "DeltaContestant", "AtOnceContestant"]


def _dense_bytes(deltas: Deltas) -> int:
    return sum(d.numel() * d.element_size() for d in deltas.values())


class Contestant:
    """One method entered in the arena (subclasses implement the four verbs)."""

    name: str = "contestant"
    model: nn.Module

    def add(self, update: Update) -> None:
        raise NotImplementedError

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        raise NotImplementedError
        yield  # pragma: no cover

    def clear(self) -> None:
        raise NotImplementedError

    def footprint(self) -> int:
        """Bytes the held updates add to the bare model."""
        raise NotImplementedError


class NoUpdate(Contestant):
    """The null contestant: takes every update and changes nothing (the unedited model)."""

    name = "no update"

    def __init__(self, model: nn.Module):
        self.model = model

    def add(self, update: Update) -> None:
        pass

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        yield self.model

    def clear(self) -> None:
        pass

    def footprint(self) -> int:
        return 0


class EditorContestant(Contestant):
    """A model editor of notebook 07 (:class:`lfmlab.editing.editor.Editor`) in the arena."""

    def __init__(self, editor: Editor):
        self.editor, self.name, self.model = editor, editor.name, editor.model

    def add(self, update: Update) -> None:
        self.editor.add(update.request)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        with self.editor.edited() as model:
            yield model

    def clear(self) -> None:
        self.editor.clear()

    def footprint(self) -> int:
        return footprint(self.editor)


class DeltaContestant(Contestant):
    """A contestant whose updates are weight changes: ``fn(model, update) -> (deltas, bytes)``.

    ``on_base=False``: each update is computed on the model holding the earlier ones (continual);
    ``True``: on the unedited model (task arithmetic). The changes are summed, scaled by
    ``scale``, and added to the weights inside ``edited()`` only. ``bytes``: what storing the
    update takes (LoRA factors); ``None``: the summed dense change is counted."""

    def __init__(self, name: str, model: nn.Module, fn: Callable[[nn.Module, Update], tuple[Deltas, int | None]],
                 on_base: bool = False, scale: float = 1.0):
        self.name, self.model, self.fn, self.on_base, self.scale = name, model, fn, on_base, scale
        self.deltas: Deltas = {}
        self.stored: list[int | None] = []

    def add(self, update: Update) -> None:
        if self.on_base:
            deltas, stored = self.fn(self.model, update)
        else:
            with applied(self.model, self.deltas) as model:
                deltas, stored = self.fn(model, update)
        self.deltas = merge(self.deltas, {n: self.scale * d for n, d in deltas.items()})
        self.stored.append(stored)

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        with applied(self.model, self.deltas) as model:
            yield model

    def clear(self) -> None:
        self.deltas, self.stored = {}, []

    def footprint(self) -> int:
        if self.stored and all(b is not None for b in self.stored):
            return int(sum(self.stored))
        return _dense_bytes(self.deltas)


class AtOnceContestant(Contestant):
    """A contestant that makes all its updates together: ``add`` collects them, ``commit``
    computes one weight change for all of them from the unedited model (MEMIT's batch edit)."""

    def __init__(self, name: str, model: nn.Module, solve: Callable[[list[Update]], Deltas]):
        self.name, self.model, self.solve = name, model, solve
        self.pending: list[Update] = []
        self.deltas: Deltas = {}

    def add(self, update: Update) -> None:
        self.pending.append(update)

    def commit(self) -> None:
        self.deltas = self.solve(self.pending) if self.pending else {}

    @contextmanager
    def edited(self) -> Iterator[nn.Module]:
        with applied(self.model, self.deltas) as model:
            yield model

    def clear(self) -> None:
        self.pending, self.deltas = [], {}

    def footprint(self) -> int:
        return _dense_bytes(self.deltas)
