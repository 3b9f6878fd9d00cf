"""Panels of notebook 06 (meta learning): the sinusoid panel and the few-shot digits panel.

* :class:`SinusoidPanel`: draw a sinusoid task, pick K and the number of steps; **Adapt**
  fine-tunes every given initialisation (MAML's, the pretrained baseline's, ...) on the K
  points and shows the curves after any step (the *step* slider replays them, no recompute)
  and the MSE after each step.
* :class:`FewShotPanel`: sample a 5-way digits episode of unseen classes, see its support set,
  adapt a learner (fine-tune an initialisation, or build ProtoNet prototypes) and see the
  query predictions, right in green and wrong in red.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import ipywidgets as W
import torch
from torch import nn
from traitlets import Float, Int, Unicode

from lfmlab.core.params import device_of
from lfmlab.data import digits as data
from lfmlab.meta import maml, protonet, sinusoid
from lfmlab.meta.common import cross_entropy, mse
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import line_widget, set_line, updating

__all__ = ["SinusoidPanel", "SinusoidResult", "FewShotPanel", "FewShotResult"]

COLORS = ["#E45756", "#4C78A8", "#54A24B", "#B279A2", "#F58518", "#72B7B2"]


def _new_task_button(panel: Panel, trait: str, label: str) -> W.Button:
    button = W.Button(description=label, icon="refresh")

    def press(_: W.Button) -> None:
        setattr(panel, trait, getattr(panel, trait) + 1)
        panel.run()

    button.on_click(panel.guard(press))
    return button


# --------------------------------------------------------------------------------------------
# Sinusoid panel
# --------------------------------------------------------------------------------------------

@dataclass
class SinusoidResult:
    """One task (amplitude, phase, K support points) and, per initialisation, its predictions
    on the grid after each step (``curves[name]`` [steps + 1, G]) and its MSE on the grid
    against the true curve (``mse[name]`` [steps + 1])."""

    amplitude: float
    phase: float
    grid: torch.Tensor
    truth: torch.Tensor
    support_x: torch.Tensor
    support_y: torch.Tensor
    curves: dict[str, torch.Tensor]
    mse: dict[str, torch.Tensor]


class SinusoidPanel(Panel):
    """Watch meta-learned and baseline initialisations adapt to a new sinusoid from K points."""

    title = "Sinusoid regression: adapt from K points (Finn et al. 2017)"
    button_label = "Adapt"
    k_shot = Int(10, min=1, max=100)
    steps = Int(10, min=0, max=100)
    lr = Float(0.01, min=0.0, max=1.0)
    task_seed = Int(0, min=0)
    step = Int(1, min=0, max=100)   # the step shown in the curve plot (replayed from the result)

    def __init__(self, models: Mapping[str, nn.Module], **kwargs):
        if not models:
            raise ValueError("the sinusoid panel needs at least one initialisation, e.g. {'MAML': model}")
        super().__init__(**kwargs)
        self.models = dict(models)
        names = list(self.models)
        self.curve_fig = line_widget(["true curve", "support (K points)", *names], "predictions after step",
                                     "x", "y", height=340)
        with updating(self.curve_fig):
            self.curve_fig.data[0].mode, self.curve_fig.data[0].line.color = "lines", "black"
            self.curve_fig.data[1].mode, self.curve_fig.data[1].marker.size = "markers", 9
            for i, name in enumerate(names):
                self.curve_fig.data[2 + i].mode = "lines"
                self.curve_fig.data[2 + i].line.color = COLORS[i % len(COLORS)]
        self.mse_fig = line_widget(names, "MSE on the whole curve", "gradient steps", "MSE", height=340, log_y=True)
        with updating(self.mse_fig):
            for i in range(len(names)):
                self.mse_fig.data[i].line.color = COLORS[i % len(COLORS)]
        self.observe(self.guard(lambda _: self.show_step()), names=["step"])

    def controls(self) -> list[W.Widget]:
        return [
            W.HBox(
                [
                    self.bind(W.IntSlider(min=1, max=50, description="K shots"), "k_shot"),
                    self.bind(W.IntSlider(min=0, max=50, description="steps"), "steps"),
                    self.bind(
                        W.FloatLogSlider(min=-4, max=0, step=0.1, description="lr α", readout_format=".4f"), "lr"
                    ),
                ]
            ),
            W.HBox(
                [
                    self.bind(W.IntText(description="task seed", layout=W.Layout(width="180px")), "task_seed"),
                    _new_task_button(self, "task_seed", "New task"),
                    self.bind(W.IntSlider(min=0, max=50, description="show step", continuous_update=True), "step"),
                ]
            ),
            W.HBox([self.curve_fig, self.mse_fig]),
        ]

    def check(self) -> None:
        if not 0 < self.lr <= 0.2:
            raise BadInput(f"lr α = {self.lr:g} is outside (0, 0.2]: above about 0.05 plain SGD on this "
                           f"regressor diverges (amplitudes up to 5 make big gradients). Try 0.01.")

    def compute(self) -> SinusoidResult:
        dev = device_of(next(iter(self.models.values())))
        task = sinusoid.sample(1, self.k_shot, 1, torch.Generator().manual_seed(self.task_seed), dev)
        grid = torch.linspace(*sinusoid.X_RANGE, 200, device=dev)[:, None]            # [G, 1]
        truth = task.curve(grid)[0]                                                   # [G, 1]
        curves, errors = {}, {}
        for name, model in self.models.items():
            trace = maml.adaptation_trace(model, task.support_x[0], task.support_y[0], grid, mse,
                                          self.steps, self.lr)                        # [steps + 1, G, 1]
            curves[name] = trace[..., 0].cpu()
            errors[name] = ((trace - truth) ** 2).mean((1, 2)).cpu()
        return SinusoidResult(float(task.amplitude[0]), float(task.phase[0]), grid[:, 0].cpu(), truth[:, 0].cpu(),
                              task.support_x[0, :, 0].cpu(), task.support_y[0, :, 0].cpu(), curves, errors)

    def summary(self, r: SinusoidResult) -> str:
        parts = [f"{name} {float(e[min(1, len(e) - 1)]):.2f} → {float(e[-1]):.2f}" for name, e in r.mse.items()]
        return f"A = {r.amplitude:.2f}, φ = {r.phase:.2f}; MSE after 1 step → last: " + "; ".join(parts)

    def render(self, r: SinusoidResult) -> None:
        steps = list(range(len(next(iter(r.mse.values())))))
        for i, e in enumerate(r.mse.values()):
            set_line(self.mse_fig, i, steps, e.tolist())
        set_line(self.curve_fig, 0, r.grid.tolist(), r.truth.tolist())
        set_line(self.curve_fig, 1, r.support_x.tolist(), r.support_y.tolist())
        self.show_step()

    def show_step(self) -> None:
        """Redraw the curves after ``step`` steps from the stored result (cheap: no fine-tuning)."""
        r = self.result
        if r is None:
            return
        s = min(self.step, len(next(iter(r.mse.values()))) - 1)
        with updating(self.curve_fig):
            for i, c in enumerate(r.curves.values()):
                self.curve_fig.data[2 + i].x, self.curve_fig.data[2 + i].y = r.grid.tolist(), c[s].tolist()
            self.curve_fig.layout.title = f"predictions after {s} step{'s' if s != 1 else ''}"


# --------------------------------------------------------------------------------------------
# Few-shot digits panel
# --------------------------------------------------------------------------------------------

@dataclass
class FewShotResult:
    """One episode: support images [S, 8, 8] and labels [S], query images [Q, 8, 8], true and
    predicted labels [Q], ``digits`` [n_way] (the digit behind each label), query accuracy per
    step ([steps + 1] for a fine-tuned learner, [1] for a metric one)."""

    learner: str
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    predicted: torch.Tensor
    digits: torch.Tensor
    accuracy: torch.Tensor

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1])


class FewShotPanel(Panel):
    """5-way few-shot digits on unseen classes: support set, adaptation, query predictions."""

    title = "Few-shot digits: sample an episode of unseen digits, adapt, predict"
    button_label = "Adapt"
    learner = Unicode("")
    k_shot = Int(1, min=1, max=20)
    n_query = Int(4, min=1, max=20)
    steps = Int(5, min=0, max=50)
    lr = Float(0.4, min=0.0, max=5.0)
    episode_seed = Int(0, min=0)

    def __init__(self, split: data.Split, finetune: Mapping[str, nn.Module] | None = None,
                 metric: Mapping[str, nn.Module] | None = None, classes: Sequence[int] = data.META_TEST_CLASSES,
                 n_way: int = 5, **kwargs):
        """``finetune``: initialisations adapted by SGD on the support set (MAML, ANIL, DFML,
        random); ``metric``: ProtoNet embeddings. "nearest centroid (pixels)" is always offered."""
        self.finetune = dict(finetune or {})
        self.metric = {**dict(metric or {}), "nearest centroid (pixels)": nn.Flatten()}
        kwargs.setdefault("learner", next(iter(self.finetune or self.metric)))
        super().__init__(**kwargs)
        self.split, self.classes, self.n_way = split, tuple(classes), int(n_way)
        self.smallest = int(min(int((split.y == c).sum()) for c in self.classes))

    def controls(self) -> list[W.Widget]:
        names = [*self.finetune, *self.metric]
        return [W.HBox([self.bind(W.Dropdown(options=names, description="learner"), "learner"),
                        self.bind(W.IntSlider(min=1, max=10, description="K shots"), "k_shot"),
                        self.bind(W.IntSlider(min=1, max=10, description="queries/class"), "n_query")]),
                W.HBox([self.bind(W.IntSlider(min=0, max=30, description="steps"), "steps"),
                        self.bind(W.FloatLogSlider(min=-2, max=0.5, step=0.1, description="lr α"), "lr"),
                        self.bind(W.IntText(description="episode", layout=W.Layout(width="160px")), "episode_seed"),
                        _new_task_button(self, "episode_seed", "New episode")])]

    def check(self) -> None:
        if self.learner not in self.finetune and self.learner not in self.metric:
            raise BadInput(
                f"unknown learner {self.learner!r}: choose one of {', '.join([*self.finetune, *self.metric])}"
            )
        if self.k_shot + self.n_query > self.smallest:
            raise BadInput(f"K shots + queries per class = {self.k_shot + self.n_query}, but the smallest class of "
                           f"this split has {self.smallest} images: lower one of them.")
        if self.learner in self.finetune and not 0 < self.lr <= 3:
            raise BadInput(
                f"lr α = {self.lr:g} is outside (0, 3]: try 0.4, the value the MAML learner was trained with."
            )

    def compute(self) -> FewShotResult:
        g = torch.Generator().manual_seed(self.episode_seed)
        ep = data.episodes(self.split, self.classes, self.n_way, self.k_shot, self.n_query, 1, generator=g)
        sx, sy, qx, qy = (t[0] for t in ep)
        if self.learner in self.finetune:
            model = self.finetune[self.learner]
            trace = maml.adaptation_trace(
                model, sx, sy, qx, cross_entropy, self.steps, self.lr
            )  # [steps + 1, Q, n_way]
            predicted = trace[-1].argmax(-1)
            accuracy = (trace.argmax(-1) == qy).float().mean(1)
        else:
            with torch.no_grad():
                logits = protonet.logits(
                    self.metric[self.learner], (ep.support_x, ep.support_y, ep.query_x, None), self.n_way
                )
            predicted = logits[0].argmax(-1)
            accuracy = (predicted == qy).float().mean()[None]
        return FewShotResult(self.learner, sx[:, 0].cpu(), sy.cpu(), qx[:, 0].cpu(), qy.cpu(), predicted.cpu(),
                             ep.classes[0].cpu(), accuracy.cpu())

    def summary(self, r: FewShotResult) -> str:
        how = f"after {len(r.accuracy) - 1} steps" if len(r.accuracy) > 1 else "prototypes"
        return f"{r.learner}: query accuracy {r.final_accuracy:.0%} ({how})"

    def render(self, r: FewShotResult) -> None:
        """One row per label: its K support images, a gap, then the queries of that class with
        the predicted label (green right, red wrong)."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        support, query = r.support_x.numpy(), r.query_x.numpy()
        n_way = len(r.digits)
        k, q = len(r.support_y) // n_way, len(r.query_y) // n_way
        cols = k + 1 + q
        fig, axes = plt.subplots(n_way, cols, figsize=(0.62 * cols + 0.6, 0.7 * n_way + 0.5), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for row in range(n_way):
            axes[row, 0].set_title(f"label {row} = digit {int(r.digits[row])}", fontsize=7, loc="left")
            for i in range(k):
                axes[row, i].imshow(support[row * k + i], cmap="gray_r")
            for j in range(q):
                idx = row * q + j
                ok = bool(r.predicted[idx] == r.query_y[idx])
                ax = axes[row, k + 1 + j]
                ax.imshow(query[idx], cmap="gray_r")
                ax.set_title(f"→ {int(r.predicted[idx])}", fontsize=7, color="#2a7" if ok else "#d33")
        fig.suptitle(f"{r.learner}: support (left) and query predictions (right), accuracy {r.final_accuracy:.0%}",
                     fontsize=8)
        fig.tight_layout()
        self.output.clear_output(wait=True)
        with self.output:
            if len(r.accuracy) > 1:
                print("query accuracy after each step:", " ".join(f"{a:.2f}" for a in r.accuracy.tolist()))
            display(fig)
        plt.close(fig)
