"""One scorer for every contestant of the arena: the same updates, the same metrics, the same costs.

:func:`score` applies a list of :class:`~lfmlab.arena.jobs.Update` to one contestant (an
:class:`lfmlab.editing.editor.Editor`: ``add`` / ``edited`` / ``clear``), one after another, and
measures, with the metric names of notebook 07 (DESIGN.md §6):

* **efficacy, paraphrase, neighbourhood, same-subject** (:func:`lfmlab.editing.metrics.evaluate`,
  all updates held at once), plus the EasyEdit-style token accuracies it returns;
* **portability**: share of question forms whose new object beats the old one
  (log P(new) > log P(old), as efficacy), beside the unedited model's share on the same prompts;
* **perplexity** on held-out, pretraining-style text (:func:`heldout_text`: facts of subjects no
  update touches, under the held-out templates), before and after;
* **cost**: compute seconds per update (for a contestant that makes its updates at once, its
  ``commit()`` is counted too); **bytes** the updates add (weight deltas, memory
  entries: :func:`footprint`); **latency**: a scoring pass of the edited model over the bare
  model's (median of three);
* **reversible**: after ``clear()`` the base model's weights hash as before, and both the base
  model and the contestant (holding nothing) give bit-identical log-probs on the edit prompts to
  those before the updates (1.0), else 0.0.

The contestant's ``access`` (what it needs of the model) is recorded beside the numbers.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
from dataclasses import asdict, dataclass, fields, is_dataclass

import torch
from torch import nn

from lfmlab.arena.jobs import Update
from lfmlab.core.lm import pair_batch, token_logprobs
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import World
from lfmlab.editing import metrics
from lfmlab.editing.editor import DeltaEditor, Editor, MemoryEditor
from lfmlab.progress import progress

__all__ = ["ACCESS", "Scorecard", "score", "weights_hash", "footprint", "heldout_text", "perplexity"]

ACCESS = ("weights and gradients", "weights only", "output scores", "text only")


@dataclass
class Scorecard:
    """What one contestant did with one list of updates (NaN where a number does not apply)."""

    contestant: str
    job: str
    n: int
    access: str
    efficacy: float
    paraphrase: float
    neighbourhood: float
    same_subject: float
    reliability: float
    generality: float
    locality: float
    portability: float
    portability_before: float
    perplexity: float
    perplexity_before: float
    seconds_per_update: float
    bytes_added: float
    latency_ratio: float
    reversible: float

    def as_dict(self) -> dict:
        return asdict(self)


def weights_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, bytes): equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _bytes(obj, seen: set[int]) -> int:
    """Bytes of the data an object holds: tensors, token ids, text; never a module's weights."""
    if id(obj) in seen or obj is None or isinstance(obj, nn.Module):
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, str):
        return len(obj.encode())
    if isinstance(obj, (bool, int, float)):
        return 8
    if isinstance(obj, dict):
        return sum(_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(_bytes(v, seen) for v in obj)
    if is_dataclass(obj):
        return sum(_bytes(getattr(obj, f.name), seen) for f in fields(obj))
    return 0


def footprint(editor: Editor) -> int:
    """Bytes the editor's current edits add to the bare model: the weight deltas it holds (as
    stored), or the data in its memory's ``memory_fields`` (tensors, token ids, text). The
    memory's own modules (a classifier, a counterfactual model, an encoder), its configuration and
    its caches are not counted: they are the same for one update or a thousand."""
    if isinstance(editor, DeltaEditor):
        return sum(d.numel() * d.element_size() for d in editor.deltas.values())
    if isinstance(editor, MemoryEditor):
        names = getattr(editor.memory, "memory_fields", None)
        if names is None:
            raise TypeError(f"{type(editor.memory).__name__} does not say which attributes hold its edits: "
                            "give the class a memory_fields tuple")
        return sum(_bytes(getattr(editor.memory, name), set()) for name in names)
    raise TypeError(f"cannot measure the footprint of {editor!r}: give a DeltaEditor or a MemoryEditor")


def heldout_text(world: World, updates: list[Update], n: int = 64, seed: int = 0) -> list[str]:
    """``n`` pretraining-style sentences no update touches: train facts of other subjects under
    the held-out templates (never in world-lm's corpus), drawn with ``seed``."""
    touched = {u.subject for u in updates}
    facts = [f for f in world.facts_of(split="train") if f.subject not in touched]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(facts), generator=g).tolist()[:n]
    return [world.sentence(facts[i], j % len(world.templates[facts[i].relation]["heldout"]), "heldout")
            for j, i in enumerate(order)]


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: Tokenizer, texts: list[str], batch_size: int = 64) -> float:
    """exp(mean next-token NLL) over the tokens of ``texts`` after each text's first word."""
    device = device_of(model)
    total, count = 0.0, 0
    for i in range(0, len(texts), batch_size):
        heads, tails = zip(*(t.split(" ", 1) for t in texts[i:i + batch_size]))
        b = pair_batch(tokenizer, list(heads), list(tails), device)
        extra = {"prompt_len": b.prompt_len} if getattr(model, "needs_prompt_len", False) else {}
        tok = token_logprobs(model(input_ids=b.input_ids, attention_mask=b.attention_mask, **extra).logits, b.labels)
        total -= float(tok.total.sum())
        count += int(tok.is_target.sum())
    return math.exp(total / max(count, 1))


def _portability(model: nn.Module, tokenizer: Tokenizer, updates: list[Update]) -> float:
    prompts = [p for u in updates for p, _ in u.portability]
    if not prompts:
        return float("nan")
    new = [o for u in updates for _, o in u.portability]
    old = [u.request.target_true for u in updates for _ in u.portability]
    stats = metrics.pair_stats(model, tokenizer, prompts * 2, new + old)
    k = len(prompts)
    return float((stats.logprob[:k] > stats.logprob[k:]).float().mean())


def _scoring_seconds(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], targets: list[str]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        metrics.pair_stats(model, tokenizer, prompts, targets)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def score(contestant, tokenizer: Tokenizer, world: World, updates: list[Update], access: str,
          text: list[str] | None = None) -> Scorecard:
    """Give ``updates`` to ``contestant`` (a :class:`lfmlab.arena.contestants.Contestant`) one
    after another (each on the model holding the earlier ones), score them all, clear it and
    check that the model is back. ``text``: the held-out text for perplexity (default
    :func:`heldout_text`)."""
    editor = contestant
    if access not in ACCESS:
        raise ValueError(f"access must be one of {ACCESS}, not {access!r}")
    if not updates:
        raise ValueError("no updates to score: give at least one")
    jobs = {u.job for u in updates}
    if len(jobs) != 1:
        raise ValueError(f"updates of one job at a time, got {sorted(jobs)}")
    base = editor.model
    requests = [u.request for u in updates]
    text = heldout_text(world, updates) if text is None else text
    probe = ([r.prompt for r in requests], [r.target_new for r in requests])
    editor.clear()
    before_hash = weights_hash(base)
    base_lp = metrics.pair_stats(base, tokenizer, *probe).logprob
    with editor.edited() as model:             # the contestant holding nothing (a kNN-LM: its corpus)
        before_lp = metrics.pair_stats(model, tokenizer, *probe).logprob
    ref = metrics.reference(base, tokenizer, requests)
    port_before = _portability(base, tokenizer, updates)
    ppl_before = perplexity(base, tokenizer, text)
    bare_s = _scoring_seconds(base, tokenizer, *probe)
    seconds = 0.0
    try:
        for u in progress(updates, desc=f"{editor.name}: {len(updates)} updates"):
            start = time.perf_counter()
            editor.add(u)
            seconds += time.perf_counter() - start
        if hasattr(editor, "commit"):          # a contestant that makes all its updates at once
            start = time.perf_counter()
            editor.commit()
            seconds += time.perf_counter() - start
        added = editor.footprint()
        with editor.edited() as model:
            quality = metrics.evaluate(model, tokenizer, requests, ref)
            port = _portability(model, tokenizer, updates)
            ppl = perplexity(model, tokenizer, text)
            latency = _scoring_seconds(model, tokenizer, *probe) / bare_s
    finally:
        editor.clear()
    with editor.edited() as model:              # cleared, it must answer exactly as before the updates
        after_lp = metrics.pair_stats(model, tokenizer, *probe).logprob
    back = weights_hash(base) == before_hash and torch.equal(after_lp, before_lp) and torch.equal(
        metrics.pair_stats(base, tokenizer, *probe).logprob, base_lp)
    q = quality
    return Scorecard(editor.name, updates[0].job, len(updates), access, q.efficacy, q.paraphrase, q.neighbourhood,
                     q.same_subject, q.reliability, q.generality, q.locality, port, port_before, ppl, ppl_before,
                     seconds / len(updates), float(added), latency, float(back))
