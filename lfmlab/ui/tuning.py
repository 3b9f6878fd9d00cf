"""The tuning panel of notebook 02: pick a method and its size, train with a live loss curve,
and compare held-out accuracy, trainable parameters, train time and inference latency.

Every run is added to a table, so pressing *Train* with different methods builds the
comparison of survey §2.1–2.2 live. The panel calls :func:`lfmlab.tuning.methods.run`; the
model it was given is never changed (each method tunes a copy).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import ipywidgets as W
from torch import nn
from traitlets import Float, Int, Unicode

from lfmlab.tuning import methods
from lfmlab.tuning.train import TrainConfig, TuneResult, latency_ratios
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import line_widget, set_line

__all__ = ["TuningPanel", "TuningRun"]


@dataclass
class TuningRun:
    """One press of *Train*: what was run and what it measured."""

    method: str
    size_label: str
    size: int
    accuracy: float
    trainable: int
    share: float
    seconds: float
    latency_ratio: float
    losses: list[float] = field(default_factory=list)
    result: TuneResult | None = field(default=None, repr=False)


class TuningPanel(Panel):
    """Tune a causal LM on a :class:`~lfmlab.tuning.tasks.QATask` with any method of the section."""

    title = "Model tuning: method, size, train, compare"
    button_label = "Train"
    method = Unicode("LoRA")
    size = Int(4)
    steps = Int(100)
    lr = Float(1e-2)

    def __init__(self, model: nn.Module, task, eval_name: str = "held-out subjects", seed: int = 0,
                 batch_size: int = 32, latency_rows: int = 1, latency_rounds: int = 30, **kwargs):
        super().__init__(**kwargs)
        if eval_name not in task.evals:
            raise ValueError(f"the task has no evaluation set {eval_name!r}; it has {list(task.evals)}")
        self.model, self.task, self.eval_name = model, task, eval_name
        self.seed, self.batch_size = seed, batch_size
        self.history: list[TuningRun] = []
        self._probe = task.evals[eval_name].rows(range(min(latency_rows, len(task.evals[eval_name]))))
        self.latency_rounds = latency_rounds
        self.loss_fig = line_widget(["training loss"], "training loss (live)", "step", "loss", height=300, log_y=True)
        self.table = W.HTML()
        self.size_slider = W.IntSlider(min=1, max=64, description="size", style={"description_width": "120px"})
        self.observe(self.guard(self._method_changed), names=["method"])
        self._method_changed()

    # ---- view ----------------------------------------------------------------------------
    def controls(self):
        self.bind(self.size_slider, "size")
        self.steps_slider = self.bind(W.IntSlider(min=1, max=1000, description="steps"), "steps")
        return [W.HBox([self.bind(W.Dropdown(options=methods.tuners(), description="method"), "method"),
                        self.size_slider]),
                W.HBox([self.steps_slider,
                        self.bind(W.FloatLogSlider(min=-5, max=0, step=0.1, description="learning rate",
                                                   readout_format=".1e", style={"description_width": "100px"}), "lr")]),
                W.HBox([self.loss_fig, self.table])]

    def _method_changed(self, *_) -> None:
        spec = methods.METHODS.get(self.method)
        if spec is None:
            return
        fixed = spec.size_range == (0, 0)
        self.size_slider.description = spec.size_label
        self.size_slider.disabled = fixed
        if not fixed:
            self.size_slider.min, self.size_slider.max = 1, spec.size_range[1]
            self.size = spec.size
        if spec.gradients:
            self.lr = spec.lr
        if hasattr(self, "steps_slider"):
            self.steps_slider.disabled = not spec.gradients

    # ---- the pattern ---------------------------------------------------------------------
    def check(self) -> None:
        if self.method not in methods.tuners():
            raise BadInput(f"Unknown method {self.method!r}: choose one of {', '.join(methods.tuners())}.")
        spec = methods.METHODS[self.method]
        lo, hi = spec.size_range
        if (lo, hi) != (0, 0) and not lo <= self.size <= hi:
            raise BadInput(f"{spec.size_label} must be between {lo} and {hi} for {self.method}; got {self.size}.")
        if spec.gradients and not 1 <= self.steps <= 5000:
            raise BadInput(f"steps must be between 1 and 5000, got {self.steps}.")
        if spec.gradients and not 0 < self.lr <= 1:
            raise BadInput(f"the learning rate must be in (0, 1], got {self.lr:g}.")
        if self.method == "BitFit" and not any(n.endswith(".bias") for n, _ in self.model.named_parameters()):
            raise BadInput("This model has no bias parameters, so BitFit has nothing to tune: choose LoRA or adapters.")

    def compute(self) -> TuningRun:
        spec = methods.METHODS[self.method]
        xs, ys = [], []

        def live(step: int, loss: float) -> None:
            xs.append(step)
            ys.append(loss)
            set_line(self.loss_fig, 0, xs, ys)

        set_line(self.loss_fig, 0, [], [])
        cfg = TrainConfig(steps=self.steps, lr=self.lr, batch_size=self.batch_size, seed=self.seed,
                          every=max(1, self.steps // 50))
        result = methods.run(self.method, self.model, self.task.train, self.size, cfg, live)
        deployed = spec.deploy(result)
        acc = self.task.evals[self.eval_name].accuracy(deployed)
        # base and tuned model paired by round, so a busy moment of a shared machine slows both alike
        ratio = latency_ratios({"base": self.model, "tuned": deployed}, self._probe.input_ids,
                               self._probe.attention_mask, rounds=self.latency_rounds)["tuned"]
        return TuningRun(self.method, spec.size_label, self.size if spec.size_range != (0, 0) else 0, acc,
                         result.trainable, result.share, result.seconds, ratio, result.losses, result)

    def summary(self, r: TuningRun) -> str:
        return (f"{r.method}: {self.eval_name} accuracy {r.accuracy:.3f} with {r.trainable:,} trainable "
                f"({100 * r.share:.2f}%)")

    def render(self, r: TuningRun) -> None:
        self.history.append(r)
        head = ["method", "size", self.eval_name, "trainable", "%", "train s", "latency × base"]
        rows = "".join(
            "<tr>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(c))}</td>" for c in (
                h.method, f"{h.size_label} {h.size}" if h.size else "—", f"{h.accuracy:.3f}", f"{h.trainable:,}",
                f"{100 * h.share:.2f}", f"{h.seconds:.1f}", f"{h.latency_ratio:.2f}")) + "</tr>"
            for h in self.history)
        self.table.value = ("<table><tr>" + "".join(f"<th style='padding:2px 8px'>{html.escape(c)}</th>" for c in head)
                            + "</tr>" + rows + "</table>")
