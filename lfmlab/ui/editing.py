"""Panels for model editing (notebook 07): an editor and a causal-tracing panel.

The editor panel keeps the current edit as weight deltas (or in a memory-based editor's
memory), so the zoo model itself is never changed: "Reset" simply forgets the edit.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
from traitlets import Enum, Int, Unicode

from lfmlab.core import lm
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, World
from lfmlab.editing import metrics, trace
from lfmlab.editing.base import EditResult
from lfmlab.editing.editor import Editor, as_editor
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import heatmap


@dataclass
class EditOutcome:
    request: EditRequest
    method: str
    rows: list[tuple[str, str, str, str, float, float]]  # kind, prompt, before, after, P(new) before, after
    scores: dict[str, float]
    seconds: float


class EditorPanel(Panel):
    """Choose subject, relation, new object and method; apply; see before/after and the metrics."""

    title = "Edit a fact inside the model"
    button_label = "Apply edit"
    subject = Unicode("Peru")
    relation = Unicode("capital")
    new_object = Unicode("Quito")
    method = Unicode("ROME")
    probe = Unicode("The capital of Peru is")
    k = Int(5, min=1, max=20)

    def __init__(self, model, tokenizer: Tokenizer, world: World, editors: dict[str, Editor], **kwargs):
        """``editors``: name -> :class:`~lfmlab.editing.editor.Editor`, usually
        ``lfmlab.editing.editors(workbench)`` (the registry); bare functions and memory models are
        accepted too (:func:`~lfmlab.editing.editor.as_editor`)."""
        super().__init__(**kwargs)
        self.model, self.tokenizer, self.world = model, tokenizer, world
        self.editors = {name: as_editor(model, e, name) for name, e in editors.items()}
        if self.method not in self.editors:
            self.method = next(iter(self.editors))
        self.active: tuple[str, EditResult] | None = None
        self._clear_all()                   # edits an earlier panel left in a shared editor
        self.table, self.probe_out = W.HTML(), W.HTML()
        self.reset_button = W.Button(description="Reset", icon="undo")
        self.reset_button.on_click(self.guard(lambda _: self.reset()))
        self.probe_button = W.Button(description="Predict", icon="search")
        self.probe_button.on_click(self.guard(lambda _: self.show_probe()))

    def controls(self):
        rel = self.bind(W.Dropdown(options=list(self.world.relations), description="relation"), "relation")
        meth = self.bind(W.Dropdown(options=list(self.editors), description="method"), "method")
        return [W.HBox([self.bind(W.Text(description="subject"), "subject"), rel]),
                W.HBox([self.bind(W.Text(description="new object"), "new_object"), meth, self.reset_button]),
                self.table,
                W.HBox([self.bind(W.Text(description="probe", layout=W.Layout(width="420px")), "probe"),
                        self.bind(W.IntSlider(description="top k", min=1, max=20), "k"), self.probe_button]),
                self.probe_out]

    def check(self):
        if self.method not in self.editors:
            raise BadInput(f"Unknown method {self.method!r}; choose one of {', '.join(self.editors)}.")
        try:
            request = self.world.edit_request(self.subject.strip(), self.relation, self.new_object)
        except KeyError as err:
            raise BadInput(err.args[0]) from None
        try:
            lm.encode_target(self.tokenizer, request.target_new)
        except ValueError as err:
            raise BadInput(str(err)) from None
        self._request = request

    def compute(self) -> EditOutcome:
        request, editor = self._request, self.editors[self.method]
        ref = metrics.reference(self.model, self.tokenizer, [request])
        prompts = [("edit", request.prompt)] + [("paraphrase", p) for p in request.paraphrase_prompts]
        prompts += [("neighbour", p) for p, _ in request.neighbourhood[:4]]
        prompts += [("same subject", p) for p, _ in request.same_subject[:3]]
        before = self._answers(self.model, prompts, request)
        self._clear_all()                                    # one edit at a time, whatever the method
        res = editor.add(request)
        self.active = (self.method, res)
        with editor.edited() as scored:
            after = self._answers(scored, prompts, request)
            scores = metrics.score_one(
                scored, self.tokenizer, request, ref.neighbour_argmax[0], ref.same_subject_hit[0]
            )
        rows = [(kind, p, b[0], a[0], b[1], a[1]) for (kind, p), b, a in zip(prompts, before, after)]
        return EditOutcome(request, self.method, rows, scores, res.seconds)

    def _answers(self, model, prompts, request):
        stats = metrics.pair_stats(model, self.tokenizer, [p for _, p in prompts], [request.target_new] * len(prompts))
        out = []
        for (_, p), lp in zip(prompts, stats.logprob):
            out.append((lm.greedy(model, self.tokenizer, p, max_new_tokens=6).strip(), lp.exp().item()))
        return out

    def summary(self, result: EditOutcome) -> str:
        s = result.scores
        return (f"{result.method}: efficacy {s['efficacy']:.0f}, paraphrase {s['paraphrase']:.2f}, "
                f"neighbourhood {s['neighbourhood']:.2f}, same-subject {s['same_subject']:.2f}")

    def render(self, result: EditOutcome) -> None:
        head = "<tr><th>kind</th><th>prompt</th><th>before</th><th>after</th><th>P(new) before → after</th></tr>"
        body = "".join(
            f"<tr><td>{k}</td><td>{html.escape(p)}</td><td>{html.escape(b)}</td>"
            f"<td><b>{html.escape(a)}</b></td><td>{pb:.3f} → {pa:.3f}</td></tr>"
            for k, p, b, a, pb, pa in result.rows)
        self.table.value = (
            f"<p>edit: <i>{html.escape(result.request.prompt)}</i> "
            f"{html.escape(result.request.target_true)} → <b>{html.escape(result.request.target_new)}</b>"
            f" ({result.method}, {result.seconds:.1f}s)</p><table>{head}{body}</table>"
        )
        self.probe = result.request.prompt
        self.show_probe()

    def reset(self) -> None:
        """Forget every edit this panel made, with any method: the model answers as the unedited
        model again (weight edits are only ever applied inside a block; memory editors are
        emptied, all of them, not only the one chosen now)."""
        self._clear_all()
        self.active = None
        self.table.value = ""
        self.ok, self.message = True, "reset: no edit is active"
        self.show_probe()

    def _clear_all(self) -> None:
        for editor in self.editors.values():
            editor.clear()

    def show_probe(self) -> None:
        """Top-k next tokens after the probe prompt: unedited, and with the active edit."""
        if not self.probe.strip():
            self.ok, self.message = False, "The probe prompt is empty: type the start of a sentence."
            return
        cols = [("unedited", lm.top_k(self.model, self.tokenizer, self.probe, self.k))]
        if self.active:
            method, _ = self.active
            with self.editors[method].edited() as edited:      # the weights, or the memory, of the edit
                top = lm.top_k(edited, self.tokenizer, self.probe, self.k)
            cols.append((f"edited ({method})", top))
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(repr(c[1][i][0]))}</td><td>{c[1][i][1]:.3f}</td>"
                                        for c in cols) + "</tr>" for i in range(self.k))
        heads = "".join(f"<th colspan=2>{name}</th>" for name, _ in cols)
        self.probe_out.value = f"<table><tr>{heads}</tr>{rows}</table>"


class TracePanel(Panel):
    """Causal tracing of any fact: where does the model look it up?"""

    title = "Causal tracing: restore one state at a time"
    button_label = "Trace"
    subject = Unicode("Peru")
    relation = Unicode("capital")
    samples = Int(10, min=1, max=50)
    kind = Enum(["all", "hidden", "mlp", "attn"], default_value="all")

    def __init__(self, model, tokenizer: Tokenizer, world: World, **kwargs):
        super().__init__(**kwargs)
        self.model, self.tokenizer, self.world = model, tokenizer, world

    def controls(self):
        return [
            W.HBox(
                [
                    self.bind(W.Text(description="subject"), "subject"),
                    self.bind(W.Dropdown(options=list(self.world.relations), description="relation"), "relation"),
                ]
            ),
            W.HBox(
                [
                    self.bind(W.IntSlider(description="noise samples", min=1, max=50), "samples"),
                    self.bind(W.Dropdown(options=["all", "hidden", "mlp", "attn"], description="restore"), "kind"),
                ]
            ),
        ]

    def check(self):
        try:
            self._fact = self.world.lookup(self.subject.strip(), self.relation)
        except KeyError as err:
            raise BadInput(err.args[0]) from None

    def compute(self) -> trace.TraceResult:
        f = self._fact
        prompt = self.world.prompt(f.subject, f.relation)
        kinds = trace.KINDS if self.kind == "all" else (self.kind,)
        return trace.trace(self.model, self.tokenizer, prompt, f.subject, f.object, samples=self.samples, kinds=kinds)

    def summary(self, result: trace.TraceResult) -> str:
        return f"p({result.target}): clean {result.p_clean:.2f}, corrupted {result.p_corrupt:.2f}"

    def render(self, result: trace.TraceResult) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            kinds = list(result.tables)
            fig, axes = plt.subplots(1, len(kinds), figsize=(4.3 * len(kinds), 3), squeeze=False)
            layers = [str(i) for i in range(result.tables[kinds[0]].shape[1])]
            for ax, kind in zip(axes[0], kinds):
                heatmap(result.effect(kind).numpy(), layers, [repr(t)[1:-1] for t in result.tokens],
                        title=f"restore {kind}", ax=ax, colorbar="indirect effect")
                ax.set_xlabel("layer")
            fig.tight_layout()
            plt.show()
