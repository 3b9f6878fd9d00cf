"""The arena panel: pick a job, the facts (drawn, or typed), the contestants, the number of
updates and the access the model gives, press **Run**, and watch the leaderboard and the
quality-against-locality chart change.

Every run scores the chosen contestants on the same updates with :mod:`lfmlab.arena`'s one
scorer; the base model is never left changed (the scorer checks it). A typed fact
("subject | relation | new object") is one *change* update of a subject world-lm knows.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as W
from traitlets import Int, List, Unicode

from lfmlab.arena import board, jobs
from lfmlab.arena.contestants import CONTESTANTS, NoUpdate
from lfmlab.arena.scorer import ACCESS, Scorecard, heldout_text, score
from lfmlab.editing.registry import Workbench
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import updating

__all__ = ["ArenaPanel", "ArenaResult", "parse_fact"]

DEFAULT = ("ROME", "GRACE", "RAG (BM25)", "FT (+ paraphrases)", "context distillation",
           "LoRA patches (task arithmetic)")


@dataclass
class ArenaResult:
    job: str
    n: int
    cards: list[Scorecard]          # every chosen contestant, then the null row
    shown: list[Scorecard]          # those that work with the chosen access


def parse_fact(text: str) -> tuple[str, str, str]:
    """"Peru | capital | Quito" -> (subject, relation, new object); BadInput for another shape."""
    parts = [p.strip() for p in text.split("|")]
    if len(parts) != 3 or not all(parts):
        raise BadInput(f"Type a fact as 'subject | relation | new object', e.g. 'Peru | capital | Quito' "
                       f"(got {text!r}).")
    return parts[0], parts[1], parts[2]


class ArenaPanel(Panel):
    """The knowledge-update arena on one model: the leaderboard of the chosen contestants."""

    title = "Knowledge-update arena: every family updates the same facts"
    button_label = "Run"
    job = Unicode("change")
    contestants = List(Unicode(), default_value=list(DEFAULT))
    n = Int(5, min=1, max=200)
    seed = Int(0, min=0, max=10_000)
    fact = Unicode("")                      # a typed fact replaces the drawn ones (change job)
    access = Unicode(ACCESS[0])

    def __init__(self, bench: Workbench, **kwargs):
        super().__init__(**kwargs)
        self.bench = bench
        self.table = W.HTML()
        self.figure = self._figure()

    @staticmethod
    def _figure():
        import plotly.graph_objects as go

        fig = go.FigureWidget(go.Scatter(x=[], y=[], text=[], mode="markers+text", textposition="top center",
                                         marker=dict(size=11, color="#4C78A8")))
        fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=40), title="quality against locality",
                          xaxis=dict(title="neighbourhood score (locality)", range=[-0.05, 1.1]),
                          yaxis=dict(title="efficacy + paraphrase, mean (quality)", range=[-0.05, 1.1]))
        return fig

    def controls(self):
        return [
            W.HBox([self.bind(W.Dropdown(options=list(jobs.JOBS), description="job"), "job"),
                    self.bind(W.BoundedIntText(min=1, max=200, description="updates"), "n"),
                    self.bind(W.BoundedIntText(min=0, max=10_000, description="seed"), "seed")]),
            self.bind(W.Text(description="or a fact", placeholder="Peru | capital | Quito (change job)",
                             layout=W.Layout(width="520px")), "fact"),
            self.bind(W.SelectMultiple(options=list(CONTESTANTS), rows=8, description="contestants",
                                       layout=W.Layout(width="520px")), "contestants"),
            self.bind(W.Dropdown(options=list(ACCESS), description="model gives",
                                 layout=W.Layout(width="520px")), "access"),
            W.HBox([self.figure, self.table]),
        ]

    def check(self):
        if self.access not in ACCESS:
            raise BadInput(f"unknown access level {self.access!r}; choose one of: {', '.join(ACCESS)}")
        try:
            board.check_names(list(self.contestants), self.job)
        except (KeyError, ValueError) as err:
            raise BadInput(err.args[0]) from None
        if self.fact.strip():
            if self.job != "change":
                raise BadInput("A typed fact is a change of a known fact: choose the 'change' job, or clear the fact.")
            try:
                jobs.typed(self.bench.world, *parse_fact(self.fact), seed=self.seed)
            except ValueError as err:
                raise BadInput(str(err)) from None

    def _updates(self) -> list[jobs.Update]:
        b = self.bench
        if self.fact.strip():
            return [jobs.typed(b.world, *parse_fact(self.fact), seed=self.seed)]
        try:
            return jobs.updates(self.job, b.model, b.tokenizer, b.world, self.n, self.seed)
        except ValueError as err:
            raise BadInput(str(err)) from None

    def compute(self) -> ArenaResult:
        updates = self._updates()
        cards = board.run(self.bench, self.job, list(self.contestants), len(updates), self.seed, updates)
        null = score(NoUpdate(self.bench.model), self.bench.tokenizer, self.bench.world, updates, ACCESS[-1],
                     text=heldout_text(self.bench.world, updates, seed=self.seed))
        cards.append(null)
        return ArenaResult(self.job, len(updates), cards, board.usable(cards, self.access))

    def summary(self, result: ArenaResult) -> str:
        shown = [c for c in result.shown if c.contestant != NoUpdate.name]
        if not shown:
            return (f"{len(result.cards) - 1} contestants on {result.n} {result.job} updates; none of them works "
                    f"when the model gives only {self.access!r} (the no-update row is shown)")
        best = max(shown, key=lambda c: c.efficacy + c.paraphrase + c.neighbourhood)
        return (f"{len(result.cards) - 1} contestants on {result.n} {result.job} updates; {len(shown)} work when "
                f"the model gives {self.access!r}; best of those on quality and locality: {best.contestant}")

    def render(self, result: ArenaResult) -> None:
        shown = result.shown
        with updating(self.figure):
            self.figure.data[0].x = [c.neighbourhood for c in shown]
            self.figure.data[0].y = [(c.efficacy + c.paraphrase) / 2 for c in shown]
            self.figure.data[0].text = [c.contestant for c in shown]
            self.figure.layout.title = f"{result.n} {result.job} updates: quality against locality"
        head = ("contestant", "efficacy", "paraphrase", "neighbourhood", "portability", "s / update", "bytes")
        body = "".join(
            f"<tr><td>{html.escape(r['contestant'])}</td><td>{r['efficacy']:.2f}</td><td>{r['paraphrase']:.2f}</td>"
            f"<td>{r['neighbourhood']:.2f}</td><td>{r['portability']:.2f}</td>"
            f"<td>{r['seconds_per_update']:.3f}</td><td>{r['bytes_added']:,.0f}</td></tr>"
            for r in board.rows(shown))
        self.table.value = ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + body + "</table>")
