"""The panel pattern (DESIGN.md §4): a traitlets model, a thin ipywidgets view, ``run()`` and ``demo()``.

A panel subclass declares its state as traits, and implements

* ``controls()``: the input widgets, each linked to a trait with :meth:`Panel.bind`;
* ``check()``: raise :class:`BadInput` with a what-and-how-to-fix message for a bad state;
* ``compute()``: call the method layer and return a result (no widget code in here);
* ``render(result)``: draw the result into the view.

``run()`` is what the button does: check, compute, store ``result``, render. A bad value shows
a message in the panel and changes nothing (``result`` and every model stay as they were);
an unexpected error is shown too, and never escapes into the kernel. Heavy work runs only on
the button, never on import or on a slider drag. ``demo(**values)`` sets controls and presses
the button: notebooks call it in smoke mode so every callback runs under papermill.
"""
from __future__ import annotations

import html
import time
import traceback
from typing import Any

import ipywidgets as W
import traitlets
from traitlets import Any as AnyTrait
from traitlets import Bool, HasTraits, Unicode


class BadInput(ValueError):
    """A problem with what the user asked for: shown in the panel, nothing is changed."""


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    return a == b


def _refusal(trait: str, value: Any, widget: W.Widget) -> str:
    """What a control refused, and what it allows."""
    options = getattr(widget, "options", None)
    if options is not None:
        names = [o[0] if isinstance(o, tuple) else o for o in options]
        return f"{trait} = {value!r} is not one of the choices: {', '.join(map(str, names))}."
    lo, hi = getattr(widget, "min", None), getattr(widget, "max", None)
    if isinstance(value, float) and value != value:
        return f"{trait} = nan is not a number; give a value in [{lo:g}, {hi:g}]." if lo is not None \
            else f"{trait} = nan is not a number."
    if lo is not None and hi is not None:
        return (f"{trait} = {value!r} is outside [{lo:g}, {hi:g}], the range of its control: "
                f"choose a value between {lo:g} and {hi:g}.")
    return f"{trait} = {value!r} is not accepted by its control."


class Panel(HasTraits):
    """Base class of every lfmlab panel."""

    title: str = "lfmlab panel"
    button_label: str = "Run"

    message = Unicode("")
    ok = Bool(True)
    busy = Bool(False)
    result = AnyTrait(None, allow_none=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._view: W.Widget | None = None
        self._refused: dict[str, str] = {}           # trait -> what its control refused (see bind)
        self.button = W.Button(description=self.button_label, button_style="primary", icon="play")
        self.button.on_click(lambda _: self.run())
        self.status = W.HTML()
        self.output = W.Output()
        self.observe(self._show_message, names=["message", "ok", "busy"])

    # ---- to implement -------------------------------------------------------------------
    def controls(self) -> list[W.Widget]:
        return []

    def check(self) -> None:
        """Raise BadInput for a bad state."""

    def compute(self) -> Any:
        raise NotImplementedError

    def render(self, result: Any) -> None:
        with self.output:
            print(result)

    def summary(self, result: Any) -> str:
        """One line shown after a successful run."""
        return "done"

    # ---- the pattern --------------------------------------------------------------------
    def bind(self, widget: W.ValueWidget, trait: str) -> W.ValueWidget:
        """Link ``widget.value`` both ways to the trait ``trait`` and return the widget.

        A value that the widget refuses or coerces (a name not among a dropdown's options, NaN or
        an out-of-range number on a slider) shows the panel's message at once, naming what is
        allowed; :meth:`run` then refuses to run until the trait holds a value its control
        accepts. Nothing escapes into the kernel."""
        syncing = [False]

        def from_widget(change):
            if syncing[0]:
                return
            syncing[0] = True
            try:
                setattr(self, trait, change["new"])
                self._refused.pop(trait, None)            # the control holds a value it accepts
            except traitlets.TraitError as err:
                widget.value = getattr(self, trait)
                self.fail(BadInput(f"{trait} = {change['new']!r} is not allowed: {err}"))
            finally:
                syncing[0] = False

        def from_trait(change):
            if syncing[0]:
                return
            syncing[0] = True
            try:
                try:
                    widget.value = change["new"]
                    refused = not _same(widget.value, change["new"])
                except (traitlets.TraitError, ValueError, TypeError):
                    refused = True
                if refused:
                    self._refused[trait] = _refusal(trait, change["new"], widget)
                    self.fail(BadInput(self._refused[trait]))
                else:
                    self._refused.pop(trait, None)
            finally:
                syncing[0] = False

        from_trait({"new": getattr(self, trait)})           # the view starts from the trait's value
        widget.observe(from_widget, "value")
        self.observe(from_trait, trait)
        return widget

    def run(self) -> Any:
        """Check, compute, store and render. Returns the result, or None after a shown error."""
        if self.busy:
            return None
        try:
            self.check()
            for message in self._refused.values():   # a value a control refused (see bind)
                raise BadInput(message)
        except Exception as err:  # noqa: BLE001  (a check that breaks is shown, never raised)
            return self.report(err)
        self.busy = True
        self.message = "running…"
        start = time.perf_counter()
        try:   # the final message is set before busy clears, so the view never shows a stale "running…"
            try:
                result = self.compute()
                summary = self.summary(result)  # inside the guard: a result that cannot be read is no result
            except Exception as err:  # never let a callback kill the kernel: show it instead
                return self.report(err)
            self.result = result
            self.ok = True
            self.message = f"{summary} ({time.perf_counter() - start:.1f}s)"
        finally:
            self.busy = False
        try:
            self.render(result)
        except Exception as err:  # noqa: BLE001  (shown, never raised into the kernel)
            with self.output:
                traceback.print_exc()
            return self.fail(err, unexpected=True)
        return result

    def guard(self, fn):
        """``fn`` wrapped for a callback other than the run button (a slider's observer, a second
        button): a bad value or an error becomes the panel's message and never reaches the kernel."""
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001  (shown, never raised into the kernel)
                return self.report(err)
        return guarded

    def report(self, err: BaseException) -> None:
        """Show ``err`` as the panel's message: a bad value as it is, anything else as unexpected,
        with its traceback in the panel's output."""
        if isinstance(err, (BadInput, ValueError, KeyError, traitlets.TraitError)):
            return self.fail(err)
        with self.output:
            traceback.print_exception(err)
        return self.fail(err, unexpected=True)

    def fail(self, err: BaseException, unexpected: bool = False) -> None:
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        prefix = f"Unexpected {type(err).__name__}: " if unexpected else ""
        kept = " (the panel still shows the last good result)" if self.result is not None else ""
        self.ok = False
        self.message = prefix + str(text) + kept
        return None

    def demo(self, **values: Any) -> Any:
        """Set controls to ``values``, press the button, and fail loudly if the run failed."""
        for name, value in values.items():
            if not self.has_trait(name):
                raise AttributeError(f"{type(self).__name__} has no control {name!r}")
            setattr(self, name, value)
        self.widget  # build the view, as a user would see it
        self.button.click()
        if not self.ok:
            raise RuntimeError(f"{type(self).__name__}.demo failed: {self.message}")
        return self.result

    @property
    def widget(self) -> W.Widget:
        if self._view is None:
            header = W.HTML(f"<b>{html.escape(self.title)}</b>")
            self._view = W.VBox([header, *self.controls(), W.HBox([self.button, self.status]), self.output])
            self._show_message()
        return self._view

    def _show_message(self, *_: Any) -> None:
        color = "#555" if self.ok else "#b00020"
        icon = "⏳ " if self.busy else ("" if self.ok else "⚠ ")
        self.status.value = f"<span style='color:{color}'>{icon}{html.escape(self.message)}</span>"
        self.button.disabled = self.busy

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
