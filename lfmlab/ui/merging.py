"""Panels of notebook 05 (model reuse): the interpolation panel and the merging bench.

* :class:`InterpolationPanel`: pick two models; **Compute paths** evaluates the straight line
  between them before and after Git Re-Basin; the slider α then moves along both paths live
  (one cheap evaluation per move) and shows the loss and accuracy at that point.
* :class:`MergeBenchPanel`: pick tasks, a merging method and λ; **Merge** merges the trunks of
  those tasks' fine-tuned models and shows per-task and mean accuracy next to the pretrained
  and the individual models.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Mapping

import ipywidgets as W
import torch
from torch import nn
from traitlets import Float, Int, Tuple, Unicode

from lfmlab import validate
from lfmlab.core.state import functional_eval, merge_keys, state_of
from lfmlab.reuse import connectivity, merging, rebasin
from lfmlab.reuse.interpolate import path_states
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import line_widget, set_line, sync, updating

__all__ = ["InterpolationPanel", "MergeBenchPanel", "InterpolationResult", "BenchResult"]


# --------------------------------------------------------------------------------------------
# Interpolation panel
# --------------------------------------------------------------------------------------------

@dataclass
class InterpolationResult:
    a: str
    b: str
    naive: connectivity.Path
    aligned: connectivity.Path
    state_a: dict
    state_b: dict
    state_b_aligned: dict

    @property
    def reduction(self) -> float:
        """The share of the loss barrier that re-basin removed."""
        return 1 - self.aligned.loss_barrier / max(self.naive.loss_barrier, 1e-12)


class InterpolationPanel(Panel):
    """Walk the straight line between two MLPs, before and after re-basin (weight matching)."""

    title = "Linear interpolation between two models, before and after Git Re-Basin"
    button_label = "Compute paths"
    model_a = Unicode("")
    model_b = Unicode("")
    alpha = Float(0.5, min=0.0, max=1.0)
    points = Int(21, min=3, max=101)
    split = Unicode("test")

    def __init__(self, models: Mapping[str, nn.Module], data, layers: list[str] | None = None, **kwargs):
        names = list(models)
        if len(names) < 2:
            raise ValueError("the interpolation panel needs at least two models")
        kwargs.setdefault("model_a", names[0])
        kwargs.setdefault("model_b", names[1])
        super().__init__(**kwargs)
        self.models, self.data = dict(models), data
        first = next(iter(self.models.values()))
        self.layers = layers or [n for n, m in first.named_modules() if isinstance(m, nn.Linear)]
        self.spec = rebasin.mlp_spec(self.layers)
        self.loss_fig = line_widget(["naive", "re-basin", "naive @ α", "re-basin @ α"], "loss along the path",
                                    "α (0 = A, 1 = B)", "cross-entropy", height=300)
        self.acc_fig = line_widget(["naive", "re-basin", "naive @ α", "re-basin @ α"], "accuracy along the path",
                                   "α (0 = A, 1 = B)", "accuracy", height=300)
        for fig in (self.loss_fig, self.acc_fig):
            with updating(fig):
                for i in (2, 3):
                    fig.data[i].mode, fig.data[i].marker.size, fig.data[i].showlegend = "markers", 12, False
        self.readout = W.HTML()
        self.observe(self.guard(lambda _: self.update_point()), names=["alpha"])

    def controls(self):
        names = list(self.models)
        return [
            W.HBox(
                [
                    self.bind(W.Dropdown(options=names, description="model A"), "model_a"),
                    self.bind(W.Dropdown(options=names, description="model B"), "model_b"),
                    self.bind(W.Dropdown(options=["test", "val", "train"], description="split"), "split"),
                ]
            ),
            W.HBox(
                [
                    self.bind(W.IntSlider(min=3, max=101, step=2, description="points"), "points"),
                    self.bind(W.FloatSlider(min=0, max=1, step=0.02, description="α", continuous_update=True), "alpha"),
                ]
            ),
            W.HBox([self.loss_fig, self.acc_fig]),
            self.readout,
        ]

    def check(self):
        for name in (self.model_a, self.model_b):
            if name not in self.models:
                raise BadInput(f"unknown model {name!r}: choose one of {', '.join(self.models)}")
        if self.model_a == self.model_b:
            raise BadInput("Model A and model B are the same model: pick two different ones to see a barrier.")
        if self.split not in ("train", "val", "test"):
            raise BadInput(f"split must be 'train', 'val' or 'test', not {self.split!r}")
        try:
            merge_keys([self.models[self.model_a].state_dict(), self.models[self.model_b].state_dict()])
        except ValueError as err:
            raise BadInput(f"These models cannot be interpolated: {err}") from None

    def _xy(self):
        s = getattr(self.data, self.split)
        return s.x, s.y

    def compute(self) -> InterpolationResult:
        a, b = state_of(self.models[self.model_a]), state_of(self.models[self.model_b])
        x, y = self._xy()
        template = self.models[self.model_a]
        aligned = rebasin.weight_matching(self.spec, a, b).state
        return InterpolationResult(self.model_a, self.model_b,
                                   connectivity.linear_path(template, a, b, x, y, self.points),
                                   connectivity.linear_path(template, a, aligned, x, y, self.points), a, b, aligned)

    def summary(self, r: InterpolationResult) -> str:
        return (f"loss barrier {r.naive.loss_barrier:.3f} → {r.aligned.loss_barrier:.3f} after re-basin "
                f"({100 * r.reduction:.0f}% removed)")

    def render(self, r: InterpolationResult) -> None:
        for fig, attr in ((self.loss_fig, "loss"), (self.acc_fig, "accuracy")):
            set_line(fig, 0, r.naive.t.tolist(), getattr(r.naive, attr).tolist())
            set_line(fig, 1, r.aligned.t.tolist(), getattr(r.aligned, attr).tolist())
        self.update_point()

    def point(self, alpha: float) -> dict[str, tuple[float, float]]:
        """Loss and accuracy at α on both paths (one small evaluation each; needs a computed result)."""
        r = self.result
        x, y = self._xy()
        t = torch.tensor([validate.number("α", alpha, 0.0, 1.0, fix="α runs from model A (0) to model B (1).")])
        out = {}
        for name, b in (("naive", r.state_b), ("re-basin", r.state_b_aligned)):
            loss, acc = functional_eval(self.models[r.a], path_states(r.state_a, b, t), x, y)
            out[name] = (float(loss[0]), float(acc[0]))
        return out

    def update_point(self) -> None:
        if self.result is None:
            return
        try:
            p = self.point(self.alpha)
        except ValueError as err:
            self.fail(err)
            return
        except Exception as err:  # a slider callback must never raise into the kernel
            self.fail(err, unexpected=True)
            return
        for fig, j in ((self.loss_fig, 0), (self.acc_fig, 1)):
            set_line(fig, 2, [self.alpha], [p["naive"][j]])
            set_line(fig, 3, [self.alpha], [p["re-basin"][j]])
        self.readout.value = (
            f"at α = {self.alpha:.2f}: naive loss {p['naive'][0]:.3f}, accuracy {p['naive'][1]:.3f} | "
            f"re-basin loss {p['re-basin'][0]:.3f}, accuracy {p['re-basin'][1]:.3f}"
        )


# --------------------------------------------------------------------------------------------
# Merging bench
# --------------------------------------------------------------------------------------------

@dataclass
class BenchResult:
    method: str
    lam: float | None
    tasks: list[str]
    merged: dict[str, float]
    pretrained: dict[str, float]
    individual: dict[str, float]
    hyper: dict

    def mean(self, row: str = "merged") -> float:
        values = getattr(self, row)
        return sum(values.values()) / len(values)


class MergeBenchPanel(Panel):
    """Merge the trunks of chosen tasks with one method and see per-task accuracy."""

    title = "Merging bench: pick tasks, a method and λ"
    button_label = "Merge"
    method = Unicode("task arithmetic")
    lam = Float(0.3, min=0.0, max=2.0)
    tasks = Tuple()

    USES_LAMBDA = ("task arithmetic", "TIES", "DARE", "TSV-M", "AdaMerging", "AdaMerging+div")

    def __init__(self, pool, stats=None, **kwargs):
        kwargs.setdefault("tasks", tuple(pool.tasks))
        super().__init__(**kwargs)
        self.pool, self.stats = pool, stats
        import plotly.graph_objects as go

        self.figure = go.FigureWidget([go.Bar(name=n, x=[], y=[]) for n in ("pretrained", "merged", "individual")])
        self.figure.update_layout(barmode="group", height=320, yaxis_title="test accuracy", yaxis_range=[0, 1],
                                  margin=dict(l=10, r=10, t=40, b=30), title="per-task accuracy")
        sync(self.figure)
        self.table = W.HTML()

    def controls(self):
        return [
            W.HBox(
                [
                    self.bind(
                        W.SelectMultiple(
                            options=list(self.pool.tasks), rows=min(8, len(self.pool.tasks)), description="tasks"
                        ),
                        "tasks",
                    ),
                    W.VBox(
                        [
                            self.bind(
                                W.Dropdown(options=list(merging.METHODS + merging.EXTRA), description="method"),
                                "method",
                            ),
                            self.bind(
                                W.FloatSlider(min=0, max=2, step=0.05, description="λ", continuous_update=False), "lam"
                            ),
                        ]
                    ),
                ]
            ),
            self.figure,
            self.table,
        ]

    def check(self):
        if len(self.tasks) < 2:
            raise BadInput(f"Pick at least two tasks to merge (you picked {len(self.tasks)}); ctrl/cmd-click adds one.")
        unknown = [t for t in self.tasks if t not in self.pool.tasks]
        if unknown:
            raise BadInput(f"Tasks {unknown} are not in the pool; it has {', '.join(self.pool.tasks)}.")
        if self.method not in merging.METHODS + merging.EXTRA:
            raise BadInput(
                f"Unknown method {self.method!r}: choose one of {', '.join(merging.METHODS + merging.EXTRA)}."
            )
        if self.method in self.USES_LAMBDA:
            validate.number("λ", self.lam, 0.0, 2.0, lo_open=True, fix="Set λ on the slider, e.g. 0.3.")
        if self.method in self.USES_LAMBDA and self.lam <= 0:
            raise BadInput(f"λ = 0 returns the pretrained model: set λ > 0 for {self.method}.")

    def compute(self) -> BenchResult:
        tasks = list(self.tasks)
        lam = self.lam if self.method in self.USES_LAMBDA else None
        kw = {"steps": 60} if self.method.startswith("AdaMerging") else {}
        if self.method in ("Fisher", "RegMean") and self.stats is None:
            self.stats = merging.stats(self.pool)                            # once, for all tasks
        m = merging.merge(self.pool, self.method, tasks, lam, self.stats, **kw)
        trunk = {k: m.state[k] for k in self.pool.trunk_keys}
        return BenchResult(self.method, lam, tasks, self.pool.accuracy(trunk, tasks=tasks),
                           self.pool.accuracy(self.pool.trunk(), tasks=tasks), self.pool.accuracy(tasks=tasks), m.hyper)

    def summary(self, r: BenchResult) -> str:
        lam = f", λ = {r.lam:g}" if r.lam is not None else " (λ not used)"
        return f"{r.method}{lam}: mean accuracy {r.mean():.3f} over {len(r.tasks)} tasks"

    def render(self, r: BenchResult) -> None:
        with updating(self.figure):
            for bar, row in zip(self.figure.data, (r.pretrained, r.merged, r.individual)):
                bar.x, bar.y = r.tasks, [row[t] for t in r.tasks]
        pre, ind, mer = r.mean("pretrained"), r.mean("individual"), r.mean()
        share = (mer - pre) / (ind - pre) if ind > pre else float("nan")
        rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{r.pretrained[t]:.3f}</td><td><b>{r.merged[t]:.3f}</b></td>"
                       f"<td>{r.individual[t]:.3f}</td></tr>" for t in r.tasks)
        self.table.value = (f"<table><tr><th>task</th><th>pretrained</th><th>merged</th><th>individual</th></tr>{rows}"
                            f"<tr><td><b>mean</b></td><td>{pre:.3f}</td><td><b>{mer:.3f}</b></td><td>{ind:.3f}</td></tr>"
                            f"</table><p>share of the fine-tuning gain recovered: {share:.2f}</p>")
