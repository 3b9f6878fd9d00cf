"""The panel of notebook 04 (model distillation): data-free KD with a live view.

:class:`DistillPanel`: choose a method and the weight of each synthesis loss term (CE, BN, TV,
L2, activation, entropy, adversarial; a method's own defaults are loaded when it is chosen,
and the terms it cannot use are greyed out), the synthesis and student budgets, then
**Distil**. While it runs, a grid shows the current synthetic images sorted by the teacher's
label (one column per class) and the student's accuracy on the real test split is drawn as
it learns. Every run is a call to :mod:`lfmlab.distill`; nothing here trains by itself.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import torch
from torch import nn
from traitlets import Float, Int, Unicode

from lfmlab import distill
from lfmlab.core.params import device_of, evaluating
from lfmlab.distill import adversarial, dafl, deepinversion, fast, kd, nayer, zskd
from lfmlab.distill.common import TERMS, DistillResult, Weights
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import line_widget, set_line, updating

__all__ = ["DistillPanel", "RUNNERS", "class_grid"]

LABELS = {"ce": "CE", "bn": "BN (eq. 4)", "tv": "TV (eq. 3)", "l2": "L2 (eq. 3)", "activation": "activation",
          "entropy": "entropy", "adversarial": "adversarial"}


def _noise(teacher, student, w: Weights, synth_steps: int, student_steps: int, test, g, cb) -> DistillResult:
    return kd.kd_noise(teacher, student, kd.KDConfig(steps=student_steps), test, g, cb)


def _di(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
    cfg = deepinversion.DIConfig(per_class=30).with_weights(w)
    cfg.inversion.steps, cfg.kd.steps = synth_steps, student_steps
    return deepinversion.deepinversion(teacher, student, cfg, test, g, cb)


def _zskd(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
    cfg = zskd.ZSKDConfig(per_class=30).with_weights(w)
    cfg.inversion.steps, cfg.kd.steps = synth_steps, student_steps
    return zskd.zskd(teacher, student, cfg, test, g, cb)


def _dafl(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
    cfg = dafl.DAFLConfig(iterations=student_steps).with_weights(w)
    return dafl.dafl(teacher, student, cfg, test, g, cb)


def _nayer(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
    # 10 rounds of 30 images at a fifth of the pixel steps: a fifth of DeepInversion's teacher passes here
    cfg = nayer.NAYERConfig(rounds=10, per_round=30, g_steps=max(synth_steps // 5, 1)).with_weights(w)
    cfg.kd.steps = student_steps
    return nayer.nayer(teacher, student, cfg, test, g, cb)


def _adversarial(kind: str) -> Callable[..., DistillResult]:
    def run(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
        cfg = adversarial.AdversarialConfig(kind=kind, iterations=max(student_steps // 10, 1),
                                            student_steps=10).with_weights(w)
        return adversarial.zskt(teacher, student, cfg, test, g, cb)
    return run


def _fast(teacher, student, w, synth_steps, student_steps, test, g, cb) -> DistillResult:
    cfg = fast.FastConfig(rounds=6, inner_steps=max(synth_steps // 20, 1)).with_weights(w)
    cfg.kd.steps = student_steps
    return fast.fast_dfkd(teacher, student, cfg, test, g, cb)


# the panel's runners, keyed by the names of the area's registry (lfmlab.distill.METHODS), which holds
# each synthesiser's default weights and usable terms
RUNNERS: dict[str, Callable[..., DistillResult]] = {
    "KD on Gaussian noise": _noise,
    "DeepInversion": _di,
    "ZSKD (data impressions)": _zskd,
    "DAFL": _dafl,
    "NAYER": _nayer,
    "ZSKT (KL)": _adversarial("kl"),
    "DFAD (L1)": _adversarial("l1"),
    "Fast (meta-learned generator)": _fast,
}
ADVERSARIAL = ("ZSKT (KL)", "DFAD (L1)")
OPTIMISED = ("DeepInversion", "ZSKD (data impressions)", "Fast (meta-learned generator)")


def _spec(name: str) -> tuple[Weights, tuple[str, ...]]:
    """(default weights, usable terms) of a panel method, from the registry (noise KD has none)."""
    info = distill.METHODS[name]
    return info.extra.get("weights", Weights()), info.extra.get("terms", ())


def _gaps_as_none(grid: np.ndarray) -> list[list[float | None]]:
    """NaN is not JSON: the widget would print a serialisation warning under the panel."""
    return [[None if v != v else float(v) for v in row] for row in grid.tolist()]


def class_grid(images: torch.Tensor, labels: torch.Tensor, n_classes: int = 10, rows: int = 4,
               gap: int = 1) -> np.ndarray:
    """Tile images [N, 1, H, W] into one array: column c holds up to ``rows`` images the teacher
    calls c (top to bottom), NaN where there are none (drawn blank; :func:`_gaps_as_none` turns
    them into JSON nulls for the widget)."""
    h, w = images.shape[-2:]
    out = np.full((rows * (h + gap) - gap, n_classes * (w + gap) - gap), np.nan, dtype=np.float32)
    imgs = images[:, 0].float().cpu().numpy()
    for c in range(n_classes):
        rows_c = np.flatnonzero(labels.cpu().numpy() == c)[:rows]
        for r, i in enumerate(rows_c):
            out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = imgs[i]
    return out


class DistillPanel(Panel):
    """Data-free distillation of a teacher into a student, with live images and accuracy."""

    title = "Data-free distillation: synthesise inputs from the teacher, distil the student (survey §3)"
    button_label = "Distil"
    method = Unicode("DeepInversion")
    ce = Float(1.0)
    bn = Float(0.1)
    tv = Float(0.05)
    l2 = Float(0.001)
    activation = Float(0.0)
    entropy = Float(0.0)
    adversarial = Float(0.0)
    synth_steps = Int(100)
    student_steps = Int(400)
    seed = Int(0)

    def __init__(self, teacher: nn.Module, student: nn.Module, test: tuple[torch.Tensor, torch.Tensor], **kwargs: Any):
        super().__init__(**kwargs)
        self.teacher, self.student, self.test = teacher, student, test
        self.sliders: dict[str, W.FloatText] = {}
        self.grid_fig = self._grid_widget()
        self.curve_fig = line_widget(["student"], "student accuracy on the real test split", "student steps",
                                     "accuracy", height=300)
        with updating(self.curve_fig):
            self.curve_fig.update_yaxes(range=[0, 1])
        self.observe(self.guard(self._load_defaults), names=["method"])
        self._load_defaults()

    # ---- view -------------------------------------------------------------------------
    @staticmethod
    def _grid_widget():
        import plotly.graph_objects as go

        fig = go.FigureWidget(go.Heatmap(z=[[None]], colorscale="Greys", zmin=0, zmax=1, showscale=False))
        fig.update_layout(title="synthetic images, one column per teacher label 0-9", height=300,
                          margin=dict(l=10, r=10, t=40, b=10))
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x")
        fig.update_xaxes(showticklabels=False)
        return fig

    def controls(self) -> list[W.Widget]:
        for name in TERMS:
            self.sliders[name] = self.bind(W.BoundedFloatText(min=0, max=100, step=0.01, description=LABELS[name],
                                                              layout=W.Layout(width="190px")), name)
        self._grey_out()
        terms = list(self.sliders.values())
        return [W.HBox([self.bind(W.Dropdown(options=list(RUNNERS), description="method",
                                             layout=W.Layout(width="360px")), "method"),
                        self.bind(W.IntText(description="seed", layout=W.Layout(width="150px")), "seed")]),
                W.HBox(terms[:4]), W.HBox(terms[4:]),
                W.HBox([self.bind(W.IntSlider(min=0, max=2000, step=10, description="synth steps"), "synth_steps"),
                        self.bind(W.IntSlider(min=10, max=5000, step=10, description="student steps"),
                                  "student_steps")]),
                W.HBox([self.grid_fig, self.curve_fig])]

    def _load_defaults(self, *_: Any) -> None:
        """A method's own weights when it is chosen; the terms it cannot use are greyed out."""
        if self.method not in RUNNERS:
            return
        for name, value in asdict(_spec(self.method)[0]).items():
            setattr(self, name, value)
        self._grey_out()

    def _grey_out(self) -> None:
        usable = _spec(self.method)[1] if self.method in RUNNERS else ()
        for name, box in self.sliders.items():
            box.disabled = name not in usable

    # ---- the pattern --------------------------------------------------------------------
    def weights(self) -> Weights:
        return Weights(**{name: float(getattr(self, name)) for name in TERMS})

    def check(self) -> None:
        if self.method not in RUNNERS:
            raise BadInput(f"unknown method {self.method!r}: choose one of {', '.join(RUNNERS)}")
        w, usable = self.weights(), _spec(self.method)[1]
        negative = [LABELS[k] for k in TERMS if getattr(w, k) < 0]
        if negative:
            raise BadInput(f"weights must be >= 0 (a negative weight turns a penalty into a reward): "
                           f"{', '.join(negative)}. Set them to 0 or more.")
        unused = [LABELS[k] for k in w.active() if k not in usable]
        if unused:
            raise BadInput(f"{self.method} has no {', '.join(unused)} term: set it to 0, or pick a method "
                           f"that uses it.")
        if self.method in ADVERSARIAL and w.adversarial <= 0:
            raise BadInput(f"{self.method} needs an adversarial weight > 0: it is what drives its generator "
                           f"towards the student's mistakes.")
        if usable and not w.active():
            raise BadInput("every weight is 0, so the synthesiser has nothing to optimise: give CE or BN a "
                           "weight (e.g. CE 1, BN 0.1).")
        if not 10 <= self.student_steps <= 5000:
            raise BadInput(f"student steps = {self.student_steps} is outside [10, 5000].")
        if self.method in OPTIMISED and not 1 <= self.synth_steps <= 2000:
            raise BadInput(f"synth steps = {self.synth_steps}: {self.method} optimises its images, give it "
                           f"between 1 and 2000 steps (100 is quick).")

    def compute(self) -> DistillResult:
        run = RUNNERS[self.method]
        g = torch.Generator().manual_seed(self.seed)
        self._clear()
        return run(self.teacher, self.student, self.weights(), self.synth_steps, self.student_steps, self.test,
                   g, self._live)

    def summary(self, r: DistillResult) -> str:
        return (f"{r.method}: student {r.accuracy:.1%} on the real test split; {r.n_images:,} images, "
                f"synthesis {r.synth_seconds:.1f}s + training {r.train_seconds:.1f}s")

    def render(self, r: DistillResult) -> None:
        if r.images is not None:
            self._show_images(r.images, r.labels)
        set_line(self.curve_fig, 0, r.curve_steps.tolist(), r.curve_accuracy.tolist())

    # ---- live ------------------------------------------------------------------------------
    def _clear(self) -> None:
        self._xs: list[int] = []
        self._ys: list[float] = []
        set_line(self.curve_fig, 0, [], [])

    def _live(self, phase: str, step: int, images: torch.Tensor | None, accuracy: float | None) -> None:
        if images is not None:
            self._show_images(images, None, f"{phase}, step {step}")
        if accuracy is not None:
            self._xs.append(step)
            self._ys.append(accuracy)
            set_line(self.curve_fig, 0, self._xs, self._ys)

    @torch.no_grad()
    def _show_images(self, images: torch.Tensor, labels: torch.Tensor | None, title: str | None = None) -> None:
        if labels is None:
            with evaluating(self.teacher):
                labels = self.teacher(images.to(device_of(self.teacher))).argmax(-1).cpu()
        with updating(self.grid_fig):
            self.grid_fig.data[0].z = _gaps_as_none(class_grid(images, labels))
            self.grid_fig.layout.title = f"synthetic images by teacher label 0-9{' (' + title + ')' if title else ''}"
