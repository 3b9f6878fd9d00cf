"""Retrieval panels (notebook 03): look inside kNN-LM, and put facts into its datastore and take them out.

* :class:`KNNPanel` — type a prompt: the LM's top-k next tokens, the retrieved neighbours
  (context snippet, next token, distance, weight) and the interpolated distribution. Moving λ, k
  or T re-mixes the cached neighbours at once (no forward pass, no search); the button re-reads.
* :class:`FactPanel` — add a fact (subject, relation, object) to the datastore or remove it, then
  ask the model again: the LM alone versus kNN-LM, in a trained and a held-out phrasing.
* :class:`RALMPanel` — In-Context RALM's stride and query length: perplexity of the facts and of
  all tokens against the LM alone, the retrieval calls, and which passage each block of a text read.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import ipywidgets as W
from traitlets import Float, Int, Unicode

from lfmlab import validate
from lfmlab.core import lm
from lfmlab.core.types import Tokenizer
from lfmlab.data import world as world_data
from lfmlab.data.world import Fact
from lfmlab.retrieval import knnlm, ralm
from lfmlab.retrieval.datastore import Datastore
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.plots import bar_widget, set_bars, updating

K_MAX = 64


def _top(p, tokenizer: Tokenizer, n: int) -> tuple[list[str], list[float]]:
    values, idx = p.topk(n)
    return [tokenizer.decode([int(i)]) for i in idx], [float(v) for v in values]


def _check_mix(lam: float, k: int, temperature: float) -> None:
    knnlm.settings(lam, k, temperature)               # the method's own rule, with its message
    if k > K_MAX:
        raise BadInput(f"k = {k}: outside [1, {K_MAX}]; choose between 1 and {K_MAX} neighbours "
                       "(the most this panel keeps per prompt).")


class KNNPanel(Panel):
    """p = λ p_kNN + (1 − λ) p_LM for one prompt, with the neighbours that make p_kNN."""

    title = "kNN-LM: the LM, its nearest neighbours, and their mixture"
    button_label = "Retrieve"
    prompt = Unicode("The capital of Peru is")
    lam = Float(0.25)
    k = Int(8)
    temperature = Float(10.0)
    top = Int(8)

    def __init__(self, model, tokenizer: Tokenizer, store: Datastore, **kwargs):
        super().__init__(**kwargs)
        self.model, self.tokenizer, self.store = model, tokenizer, store
        self.figures = [bar_widget(t, height=280) for t in ("LM: p_LM", "neighbours: p_kNN", "kNN-LM: p")]
        self.table = W.HTML()
        self.observe(self.guard(self._remix), names=["lam", "k", "temperature", "top"])

    def controls(self):
        text = self.bind(W.Text(description="prompt", layout=W.Layout(width="520px"), continuous_update=False),
                         "prompt")
        sliders = [self.bind(W.FloatSlider(description="λ", min=0, max=1, step=0.05), "lam"),
                   self.bind(W.IntSlider(description="k", min=1, max=K_MAX), "k"),
                   self.bind(W.FloatLogSlider(description="T", base=10, min=-1, max=3), "temperature"),
                   self.bind(W.IntSlider(description="top", min=3, max=20), "top")]
        return [text, W.HBox(sliders[:2]), W.HBox(sliders[2:]), W.HBox(self.figures), self.table]

    def check(self):
        if not self.prompt.strip():
            raise BadInput("The prompt is empty: type the start of a sentence, e.g. 'The capital of Peru is'.")
        lm.fits(self.model, len(lm.encode_prompt(self.tokenizer, self.prompt)))
        if len(self.store) == 0:
            raise BadInput("The datastore is empty: build it from a corpus first (datastore.build).")
        _check_mix(self.lam, self.k, self.temperature)
        self._check_top()

    def _check_top(self) -> None:
        validate.number("top", self.top, 1, 50, integer=True,
                        fix="top is how many tokens each chart shows (its slider offers 3 to 20).")

    def compute(self) -> knnlm.Lookup:
        return knnlm.lookup(self.model, self.tokenizer, self.store, self.prompt, k_max=K_MAX)

    def summary(self, result: knnlm.Lookup) -> str:
        _, p = result.mix(self.lam, self.k, self.temperature)
        return f"kNN-LM's next token {self.tokenizer.decode([int(p.argmax())])!r} (p = {float(p.max()):.2f})"

    def _remix(self, *_):
        if self.result is None or self.busy:
            return
        _check_mix(self.lam, self.k, self.temperature)   # refused: the guard shows the message
        self._check_top()
        self.ok, self.message = True, self.summary(self.result)
        self.render(self.result)

    def render(self, result: knnlm.Lookup) -> None:
        p_knn, p = result.mix(self.lam, self.k, self.temperature)
        n = min(self.top, p.numel())
        for fig, dist in zip(self.figures, (result.p_lm, p_knn, p)):
            set_bars(fig, *_top(dist, self.tokenizer, n))
        k = min(self.k, result.values.numel())               # a small store has fewer entries than k
        used = f"k = {k}" if k == self.k else f"k = {k} (all the store holds; asked for {self.k})"
        with updating(self.figures[2]):
            self.figures[2].layout.title = f"kNN-LM: λ = {self.lam:.2f}, {used}, T = {self.temperature:.3g}"
        first = result.neighbours.first(k)
        weights = (-first.distance[0] / self.temperature).softmax(-1)
        rows = ["<tr><th>#</th><th>stored context</th><th>next token</th><th>distance d</th><th>weight</th></tr>"]
        for i in range(k):
            context, value = self.store.snippet(self.tokenizer, int(first.index[0, i]))
            rows.append(f"<tr><td>{i + 1}</td><td>{html.escape(context)}</td><td><b>{html.escape(value)}</b></td>"
                        f"<td>{float(first.distance[0, i]):.2f}</td><td>{float(weights[i]):.3f}</td></tr>")
        self.table.value = f"<table style='font-size:90%'>{''.join(rows)}</table>"


@dataclass
class FactAnswer:
    """What the model says for one fact before/after the change (λ = 0: the LM alone)."""

    action: str
    fact: Fact
    entries: int
    prompts: list[str]
    lm_alone: list[str]
    knn_lm: list[str]
    store_size: int


class FactPanel(Panel):
    """Add a fact to a *copy* of the datastore, or remove it, and ask again. The LM never changes."""

    title = "Knowledge update without training: a fact in and out of the datastore"
    button_label = "Apply and ask"
    subject = Unicode("Belgium")
    relation = Unicode("capital")
    object = Unicode("Brussels")
    action = Unicode("add")
    lam = Float(0.5)
    k = Int(8)
    temperature = Float(10.0)

    def __init__(self, model, tokenizer: Tokenizer, store: Datastore, world=None, **kwargs):
        super().__init__(**kwargs)
        self.model, self.tokenizer = model, tokenizer
        self.store = store.copy()                               # the caller's store is never changed
        self.world = world or world_data.load()
        self.added: dict[tuple[str, str], list[int]] = {}
        self.answers = W.HTML()

    def controls(self):
        return [W.HBox([self.bind(W.Text(description="subject"), "subject"),
                        self.bind(W.Dropdown(description="relation", options=list(self.world.relations)), "relation"),
                        self.bind(W.Text(description="object"), "object")]),
                W.HBox([self.bind(W.ToggleButtons(options=["add", "remove"], description="datastore"), "action"),
                        self.bind(W.FloatSlider(description="λ", min=0, max=1, step=0.05), "lam"),
                        self.bind(W.IntSlider(description="k", min=1, max=K_MAX), "k")]),
                self.answers]

    def sentences(self) -> list[str]:
        fact = Fact(self.subject.strip(), self.relation, self.object.strip(), "new")
        return [self.world.sentence(fact, t) for t in range(len(self.world.templates[self.relation]["train"]))]

    def check(self):
        _check_mix(self.lam, self.k, self.temperature)
        if not self.subject.strip():
            raise BadInput("The subject is empty: type a country, region or element, e.g. 'Belgium'.")
        validate.text("subject", self.subject)
        if self.relation not in self.world.relations:
            raise BadInput(f"Unknown relation {self.relation!r}; choose one of {', '.join(self.world.relations)}.")
        if self.action not in ("add", "remove"):
            raise BadInput(f"action must be 'add' or 'remove', not {self.action!r}.")
        if self.action == "add":
            validate.text("object", self.object, fix="Type the answer as plain text, e.g. 'Brussels'.")
            lm.encode_target(self.tokenizer, self.object)      # raises ValueError with a fix
            if (self.subject.strip(), self.relation) in self.added:
                raise BadInput(f"A {self.relation} fact about {self.subject!r} is already in the datastore: "
                               f"remove it first.")
        elif (self.subject.strip(), self.relation) not in self.added:
            raise BadInput(f"Nothing to remove: no {self.relation} fact about {self.subject!r} was added here. "
                           f"Added so far: {sorted(self.added) or 'none'}.")

    def compute(self) -> FactAnswer:
        key = (self.subject.strip(), self.relation)
        if self.action == "add":
            before = len(self.store)
            self.added[key] = self.store.add(self.model, self.tokenizer, self.sentences())
            entries = len(self.store) - before
        else:
            entries = self.store.remove(self.added.pop(key))
        w = self.world
        prompts = [w.prompt(key[0], self.relation, 0), w.prompt(key[0], self.relation, 0, "heldout")]
        ask = lambda lam: [knnlm.generate(self.model, self.tokenizer, self.store, p, lam, self.k,  # noqa: E731
                                          self.temperature).strip() for p in prompts]
        return FactAnswer(self.action, Fact(key[0], self.relation, self.object.strip(), "new"),
                          entries, prompts, ask(0.0), ask(self.lam), len(self.store))

    def summary(self, result: FactAnswer) -> str:
        verb = "added to" if result.action == "add" else "removed from"
        return (f"{result.fact.subject} {result.fact.relation} → {result.fact.object}: {result.entries} entries "
                f"{verb} the datastore")

    def render(self, result: FactAnswer) -> None:
        rows = ["<tr><th>prompt</th><th>LM alone</th><th>kNN-LM (λ = %.2f)</th></tr>" % self.lam]
        for p, a, b in zip(result.prompts, result.lm_alone, result.knn_lm):
            good = b.rstrip(".").strip() == result.fact.object
            rows.append(f"<tr><td><i>{html.escape(p)}</i></td><td>{html.escape(a)}</td>"
                        f"<td style='color:{'#2a7' if good else '#555'}'><b>{html.escape(b)}</b></td></tr>")
        self.answers.value = (f"<table>{''.join(rows)}</table><small>datastore: {result.store_size:,} entries; "
                              f"facts added here: {len(self.added)}</small>")


class RALMPanel(Panel):
    """In-Context RALM on fixed texts: choose the stride s, the query length ℓ and the retriever.
    The LM and the retrievers are only read; the LM alone is scored once and kept."""

    title = "In-Context RALM: how often to retrieve, and with how much of the text"
    button_label = "Read the texts"
    stride = Int(4)
    query_tokens = Int(8)
    retriever = Unicode("bm25")

    def __init__(self, model, tokenizer: Tokenizer, retrievers: dict, texts: list[str], masks: list, **kwargs):
        super().__init__(**kwargs)
        if not texts or len(texts) != len(masks):
            raise ValueError("give the texts and one answer mask per text (ralm.answer_mask)")
        self.model, self.tokenizer, self.retrievers = model, tokenizer, dict(retrievers)
        self.texts, self.masks = list(texts), list(masks)
        self.retriever = self.retriever if self.retriever in self.retrievers else next(iter(self.retrievers))
        self._alone: ralm.RALMResult | None = None
        self.blocks = W.HTML()

    def controls(self):
        return [W.HBox([self.bind(W.IntSlider(description="stride s", min=1, max=32), "stride"),
                        self.bind(W.IntSlider(description="query ℓ", min=1, max=64), "query_tokens"),
                        self.bind(W.Dropdown(description="retriever", options=list(self.retrievers)), "retriever")]),
                self.blocks]

    def check(self):
        for name, low, high in (("stride", 1, 32), ("query_tokens", 1, 64)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise BadInput(f"{name} = {value}: outside [{low}, {high}]; choose between {low} and {high} tokens.")
        if self.retriever not in self.retrievers:
            raise BadInput(f"Unknown retriever {self.retriever!r}; choose one of {', '.join(self.retrievers)}.")

    def compute(self) -> dict:
        if self._alone is None:
            self._alone = ralm.perplexity(self.model, self.tokenizer, self.texts, None)
        cfg = ralm.RALMConfig(stride=self.stride, query_tokens=self.query_tokens)
        got = ralm.perplexity(self.model, self.tokenizer, self.texts, self.retrievers[self.retriever], cfg)
        return {"alone": self._alone, "ralm": got, "retriever": self.retriever}

    def summary(self, result: dict) -> str:
        a, r = result["alone"], result["ralm"]
        return (f"facts' perplexity {ralm.perplexity_on(a, self.masks):.2f} → {ralm.perplexity_on(r, self.masks):.2f}, "
                f"all tokens {a.perplexity:.2f} → {r.perplexity:.2f}; {r.retrievals} retrievals "
                f"({r.retrievals_per_token:.2f} per token), {r.seconds:.2f} s")

    def render(self, result: dict) -> None:
        r, retriever = result["ralm"], self.retrievers[result["retriever"]]
        ids = list(self.tokenizer(self.texts[0])["input_ids"])
        rows = ["<tr><th>tokens read</th><th>passage in view</th></tr>"]
        for j, start in enumerate(range(1, len(ids), self.stride)):
            part = self.tokenizer.decode(ids[start:start + self.stride])
            hit = r.passages[0][j]
            passage = retriever.passages[hit] if hit >= 0 else "(none: nothing to ask with yet)"
            rows.append(f"<tr><td><b>{html.escape(part)}</b></td><td><i>{html.escape(passage)}</i></td></tr>")
        self.blocks.value = f"<small>first text, block by block</small><table>{''.join(rows)}</table>"
