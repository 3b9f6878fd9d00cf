"""A "predict, then run" question: pick an answer, press Check, read why each option is right or
wrong. The content lives in :mod:`lfmlab.exercises.quiz`; this is only its view."""
from __future__ import annotations

import html

import ipywidgets as W

from lfmlab.exercises.quiz import Quiz


class QuizPanel:
    """One multiple-choice question with an explanation for every option."""

    def __init__(self, quiz: Quiz):
        self.quiz = quiz
        self.choice = W.RadioButtons(options=[o.text for o in quiz.options], value=None,
                                     layout=W.Layout(width="auto"))
        self.button = W.Button(description="Check", button_style="primary", icon="check")
        self.feedback = W.HTML()
        self.button.on_click(lambda _: self.answer(self.choice.value))

    def answer(self, text: str | None) -> bool | None:
        """Show the explanation of the option ``text``; return whether it is right (None: no choice)."""
        if text is None:
            self.feedback.value = "<i>Pick an answer first: predict, then run the cell below.</i>"
            return None
        option = next((o for o in self.quiz.options if o.text == text), None)
        if option is None:
            self.feedback.value = f"<i>{html.escape(text)!s} is not one of the options.</i>"
            return None
        verdict = "✓ Right." if option.correct else "✗ Not quite."
        color = "#1b7f3b" if option.correct else "#b00020"
        others = "".join(f"<li><b>{html.escape(o.text)}</b>: {html.escape(o.why)}</li>"
                         for o in self.quiz.options if o is not option)
        self.feedback.value = (f"<p style='color:{color}'><b>{verdict}</b> {html.escape(option.why)}</p>"
                               f"<details><summary>why not the others</summary><ul>{others}</ul></details>")
        return option.correct

    @property
    def widget(self) -> W.Widget:
        return W.VBox([W.HTML(f"<b>Predict, then run.</b> {html.escape(self.quiz.question)}"),
                       self.choice, self.button, self.feedback])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
