"""The probe panel: type a prompt, see a causal LM's top-k next tokens and its greedy completion."""
from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
from traitlets import Int, Unicode

from lfmlab.core import lm
from lfmlab.core.types import Tokenizer
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import bar_widget, set_bars


@dataclass
class ProbeResult:
    prompt: str
    top: list[tuple[str, float]]
    completion: str


class ProbePanel(Panel):
    """What does the model expect next? Works with any causal LM and its tokenizer."""

    title = "Probe a language model: top-k next tokens"
    button_label = "Predict"
    prompt = Unicode("The capital of Peru is")
    k = Int(10, min=1, max=50)

    def __init__(self, model, tokenizer: Tokenizer, **kwargs):
        super().__init__(**kwargs)
        self.model, self.tokenizer = model, tokenizer
        self.figure = bar_widget("next-token distribution")
        self.completion = W.HTML()

    def controls(self):
        text = self.bind(W.Text(description="prompt", layout=W.Layout(width="520px"),
                                continuous_update=False), "prompt")
        text.observe(self.guard(lambda _: self.run()), names="value")  # Enter (or leaving the box) predicts
        return [text, self.bind(W.IntSlider(description="top k", min=1, max=50), "k"),
                W.HBox([self.figure, self.completion])]

    def check(self):
        if not self.prompt.strip():
            raise BadInput("The prompt is empty: type the start of a sentence, e.g. 'The capital of Peru is'.")
        lm.fits(self.model, len(lm.encode_prompt(self.tokenizer, self.prompt)))

    def compute(self) -> ProbeResult:
        top = lm.top_k(self.model, self.tokenizer, self.prompt, self.k)
        return ProbeResult(self.prompt, top, lm.greedy(self.model, self.tokenizer, self.prompt))

    def summary(self, result: ProbeResult) -> str:
        token, p = result.top[0]
        return f"most likely next token {token!r} (p = {p:.2f})"

    def render(self, result: ProbeResult) -> None:
        tokens, probs = zip(*result.top)
        set_bars(self.figure, tokens, probs, title=f"top-{len(tokens)} after “{result.prompt}”")
        self.completion.value = (f"<p><b>greedy completion</b><br><i>{result.prompt}</i>"
                                 f"<span style='color:#4C78A8'>{result.completion}</span></p>")
