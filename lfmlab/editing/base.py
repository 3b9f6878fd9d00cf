"""What every editor shares: edit requests, their validation, and weight deltas that are
applied for a while and then taken back.

Parameter-based editors (FT, KN, ROME, MEMIT, MEND) compute a :data:`Deltas` dict
(parameter name -> change) and never leave the model changed:

>>> deltas = rome.edit(model, tok, request).deltas
>>> with applied(model, deltas):        # the edited model, inside the block only
...     lm.top_k(model, tok, request.prompt)
>>> edited = copy_with(model, deltas)   # or a separate edited copy

Survey §6, eq. 15: an edit (x_e, y_e) should change f(x) to y_e for x in the edit's scope
I(x_e) and leave f(x) unchanged outside it, O(x_e).

**The edit is not its exam.** An :class:`~lfmlab.data.world.EditRequest` bundles the edit with
the prompts that grade it (paraphrases, neighbours, the subject's other facts). Every editor
calls :func:`as_edit` first and works on the :class:`Edit` it returns, which holds only what
the edit itself says (subject, relation, prompt, old and new object): no editor can read, and
so none can fit, the prompts that :mod:`lfmlab.editing.metrics` scores.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from lfmlab.core.lm import context_limit, encode_prompt, encode_target, fits, right_pad
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest

__all__ = ["Edit", "as_edit", "BadRequest", "validate", "EditResult", "applied", "copy_with", "merge", "read_after"]

Deltas = dict[str, torch.Tensor]  # parameter name -> additive change, same shape as the parameter


@dataclass
class EditResult:
    """What an editor returns: weight changes (empty for memory-based editors) and facts about it."""

    deltas: Deltas = field(default_factory=dict)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


class BadRequest(ValueError):
    """An edit request that cannot be applied as asked; the message says how to fix it."""


PREFIX_ROOM = 16  # tokens kept free for the random prefixes ROME and MEMIT put before a prompt


def validate(tokenizer: Tokenizer, request: "EditRequest | Edit", known_subjects: set[str] | None = None) -> None:
    """Raise :class:`BadRequest` for a request no editor can honour. Nothing is changed."""
    if not request.prompt or not request.prompt.strip():
        raise BadRequest("The edit prompt is empty: give the start of a sentence that names the subject, "
                         "e.g. 'The capital of Peru is'.")
    if not request.subject or request.subject not in request.prompt:
        raise BadRequest(f"The subject {request.subject!r} does not occur in the prompt {request.prompt!r}: "
                         "locate-and-edit methods need the subject's tokens in the prompt.")
    if known_subjects is not None and request.subject not in known_subjects:
        raise BadRequest(f"Unknown subject {request.subject!r}: it is not in the world facts. "
                         "Pick one from world.load().subjects().")
    if request.target_new.strip() == request.target_true.strip():
        raise BadRequest(f"The new object {request.target_new!r} equals the current one: nothing to edit.")
    try:
        n = len(encode_prompt(tokenizer, request.prompt)) + len(encode_target(tokenizer, request.target_new))
    except ValueError as err:
        raise BadRequest(str(err)) from None
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000 and n + PREFIX_ROOM > limit:
        raise BadRequest(f"The edit prompt and new object are {n} tokens long; with room for the editors' "
                         f"random prefixes ({PREFIX_ROOM} tokens) this model reads at most "
                         f"{limit - PREFIX_ROOM}. Shorten the new object.")


@dataclass(frozen=True)
class Edit:
    """One edit, as an editor sees it: make ``prompt`` (which names ``subject``) continue with
    ``target_new`` instead of ``target_true``. It carries none of the grading prompts."""

    subject: str
    relation: str
    prompt: str
    target_true: str
    target_new: str


def as_edit(tokenizer: Tokenizer, request: "EditRequest | Edit", known_subjects: set[str] | None = None) -> Edit:
    """The boundary every editor calls first: validate ``request`` once (raise
    :class:`BadRequest`, changing nothing) and return the bare :class:`Edit`, without the
    request's paraphrase, neighbourhood and same-subject prompts (those are read by the metrics
    only)."""
    validate(tokenizer, request, known_subjects)
    return Edit(request.subject, request.relation, request.prompt, request.target_true, request.target_new)


@contextmanager
def applied(model: nn.Module, deltas: Deltas) -> Iterator[nn.Module]:
    """Add ``deltas`` to the model's parameters inside the block; restore them exactly on exit."""
    params = dict(model.named_parameters())
    missing = [n for n in deltas if n not in params]
    if missing:
        raise KeyError(f"the model has no parameters {missing}")
    saved = {n: params[n].detach().clone() for n in deltas}
    try:
        with torch.no_grad():
            for n, d in deltas.items():
                params[n].add_(d.to(params[n].device, params[n].dtype))
        yield model
    finally:
        with torch.no_grad():
            for n, original in saved.items():
                params[n].copy_(original)


def copy_with(model: nn.Module, deltas: Deltas) -> nn.Module:
    """A deep copy of ``model`` with ``deltas`` added (the original is untouched)."""
    new = copy.deepcopy(model)
    params = dict(new.named_parameters())
    with torch.no_grad():
        for n, d in deltas.items():
            params[n].add_(d.to(params[n].device, params[n].dtype))
    return new


def merge(*all_deltas: Deltas) -> Deltas:
    """Sum several delta dicts (sequential editing: each edit computed on the already-edited model)."""
    out: Deltas = {}
    for deltas in all_deltas:
        for n, d in deltas.items():
            out[n] = out[n] + d if n in out else d.clone()
    return out


@torch.no_grad()
def read_after(model: nn.Module, tokenizer: Tokenizer, contexts: list[list[int] | None], input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """Editors that answer with an edit in view (SERAC's counterfactual model, IKE): ``logits``
    [B, T, V] with each row that has a context (token ids, BOS first) replaced by what ``model``
    predicts for that row when it reads the context first. All such rows run in one right-padded
    batch; position j of a row gets the prediction of its own position j (the row's BOS is dropped
    and the context's stands for it). Where context and row together exceed the model's positions,
    the context loses tokens from its start (after its BOS): its end, the fact, is kept."""
    rows = [i for i, c in enumerate(contexts) if c is not None]
    if not rows:
        return logits
    bos = tokenizer.bos_token_id
    limit = context_limit(model)
    seqs, spans = [], []
    for i in rows:
        n = int(attention_mask[i].sum()) if attention_mask is not None else input_ids.shape[1]
        row = input_ids[i, :n].tolist()
        had_bos = bos is not None and bool(row) and row[0] == bos
        fits(limit, n, "input", room=0)              # the row alone must fit; the context may give way
        ctx = contexts[i]
        over = len(ctx) + n - (1 if had_bos else 0) - limit
        if over > 0:              # a long input: keep the context's end (the fact), and its BOS
            head = ctx[:1] if bos is not None and ctx[:1] == [bos] else []
            ctx = head + ctx[len(head) + over:]
        seqs.append(ctx + (row[1:] if had_bos else row))
        spans.append((len(ctx) - (1 if had_bos else 0), n))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = right_pad(seqs, pad, input_ids.device)
    out = model(input_ids=ids, attention_mask=mask).logits
    logits = logits.clone()
    for k, (i, (shift, n)) in enumerate(zip(rows, spans)):
        if shift >= 0:
            logits[i, :n] = out[k, shift:shift + n].to(logits.dtype)
    return logits
