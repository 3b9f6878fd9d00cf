"""State-dict algebra: the common language of every merging operator (survey §4.2).

A model's weights are a ``StateDict`` (``dict[str, Tensor]``). The operators of this package
take state dicts and return state dicts, so they work for any architecture whose checkpoints
share keys and shapes (an MLP, a CNN, a GPT-2). Only floating-point entries are merged;
integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied from the first input.

>>> a, b = state_of(model_a), state_of(model_b)
>>> tau = task_vector(b, a)                      # b - a
>>> with swapped(model_a, add(a, tau, 0.5)):    # evaluate the midpoint, model_a restored after
...     acc = model_a(x).argmax(-1).eq(y).float().mean()
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.params import evaluating

StateDict = dict[str, torch.Tensor]

__all__ = [
    "StateDict",
    "Merged",
    "state_of",
    "merge_keys",
    "task_vector",
    "add",
    "scale",
    "combine",
    "interpolate",
    "stack",
    "flatten",
    "unflatten",
    "with_state",
    "swapped",
    "functional_eval",
    "same_state",
]


def state_of(model: nn.Module | Mapping[str, torch.Tensor]) -> StateDict:
    """A detached copy of ``model.state_dict()`` (or of a state dict): safe to keep and edit."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: v.detach().clone() for k, v in sd.items()}


def merge_keys(states: Sequence[Mapping[str, torch.Tensor]], prefixes: Iterable[str] | None = None) -> list[str]:
    """The keys every operator merges: floating-point entries present, with one shape, in all
    ``states``, optionally only those starting with one of ``prefixes`` (e.g. ``["features."]``).

    Raises ``ValueError`` when the states disagree on a key's shape (different architectures).
    """
    first = states[0]
    prefixes = tuple(prefixes) if prefixes is not None else None
    keys = []
    for k, v in first.items():
        if not torch.is_floating_point(v) or (prefixes is not None and not k.startswith(prefixes)):
            continue
        for s in states[1:]:
            if k not in s:
                raise ValueError(f"key {k!r} is missing from one of the state dicts: merge models of one architecture")
            if s[k].shape != v.shape:
                raise ValueError(f"key {k!r} has shapes {tuple(v.shape)} and {tuple(s[k].shape)}: "
                                 f"these models do not share an architecture")
        keys.append(k)
    if not keys:
        raise ValueError("no floating-point keys to merge (check `prefixes`)")
    return keys


def task_vector(finetuned: Mapping[str, torch.Tensor], pretrained: Mapping[str, torch.Tensor],
                keys: Sequence[str] | None = None) -> StateDict:
    """τ = θ_ft − θ_pre (survey eq. 11, Ilharco et al. 2023), over ``keys`` (default: all mergeable)."""
    keys = keys if keys is not None else merge_keys([pretrained, finetuned])
    return {k: finetuned[k] - pretrained[k] for k in keys}


def add(base: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor], alpha: float = 1.0) -> StateDict:
    """θ = base + α · delta on delta's keys; every other entry of ``base`` is copied unchanged."""
    out = {k: v.clone() for k, v in base.items()}
    for k, d in delta.items():
        out[k] = base[k] + alpha * d
    return out


def scale(sd: Mapping[str, torch.Tensor], alpha: float) -> StateDict:
    """α · sd (floating-point entries)."""
    return {k: (alpha * v if torch.is_floating_point(v) else v.clone()) for k, v in sd.items()}


def combine(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | torch.Tensor,
            keys: Sequence[str] | None = None) -> StateDict:
    """Σ_i w_i · θ_i on ``keys``; other entries are copied from ``states[0]``. (Survey eq. 10.)"""
    keys = keys if keys is not None else merge_keys(states)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (len(states),):
        raise ValueError(f"need one weight per state dict: {len(states)} states, weights of shape {tuple(w.shape)}")
    out = {k: v.clone() for k, v in states[0].items()}
    for k in keys:
        stacked = torch.stack([s[k] for s in states])                       # [n, *shape]
        ww = w.to(stacked.device, stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
        out[k] = (ww * stacked).sum(0)
    return out


def interpolate(theta_a: Mapping[str, torch.Tensor], theta_b: Mapping[str, torch.Tensor], t: float,
                keys: Sequence[str] | None = None) -> StateDict:
    """θ_t = (1 − t) θ_a + t θ_b: model a at t = 0, model b at t = 1 (the one direction used by every
    interpolation in lfmlab: WiSE-FT's α, linear mode connectivity's path, reuse's ``lerp``).

    Floating-point entries on ``keys`` (default: all of them) are interpolated; every other entry is
    copied from θ_a. The two state dicts must have the same keys and shapes.
    """
    if set(theta_a) != set(theta_b):
        raise ValueError("the two models do not have the same parameters: interpolation needs one architecture")
    chosen = set(keys) if keys is not None else None
    out = {}
    for k, va in theta_a.items():
        vb = theta_b[k]
        if va.shape != vb.shape:
            raise ValueError(f"{k}: shapes {tuple(va.shape)} and {tuple(vb.shape)} differ")
        take = torch.is_floating_point(va) and (chosen is None or k in chosen)
        out[k] = torch.lerp(va, vb.to(va), float(t)) if take else va.clone()
    return out


def stack(states: Sequence[Mapping[str, torch.Tensor]], keys: Sequence[str] | None = None) -> StateDict:
    """key -> [n, *shape]: the n state dicts stacked (for vmap over models, or per-key merges)."""
    keys = keys if keys is not None else merge_keys(states)
    return {k: torch.stack([s[k] for s in states]) for k in keys}


def flatten(sd: Mapping[str, torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
    """The entries ``keys`` of ``sd`` as one vector [P] (P = total number of entries)."""
    return torch.cat([sd[k].reshape(-1) for k in keys])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor], keys: Sequence[str]) -> StateDict:
    """The inverse of :func:`flatten`: vector [P] -> {key: tensor shaped like ``like[key]``}."""
    out, i = {}, 0
    for k in keys:
        n = like[k].numel()
        out[k] = vector[i:i + n].reshape(like[k].shape)
        i += n
    if i != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the keys hold {i}")
    return out


def with_state(model: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """A new copy of ``model`` holding ``sd`` (eval mode, same device); ``model`` is unchanged."""
    new = copy.deepcopy(model)
    new.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=strict)
    return new.eval()


@contextmanager
def swapped(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Load ``sd`` (all or some keys) into ``model`` for the ``with`` block; the old weights come back after."""
    keep = {k: v.detach().clone() for k, v in model.state_dict().items() if k in sd}
    model.load_state_dict(dict(sd), strict=False)
    try:
        yield model
    finally:
        model.load_state_dict(keep, strict=False)


def functional_eval(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy loss and accuracy of ``model`` with a *batch* of weights, vectorised over it.

    params: key -> [m, *shape] (m weight settings, e.g. m points on a path; keys not given are
    the model's own), x [N, ...], y [N]. Returns (loss [m], accuracy [m]). The model is
    unchanged (``torch.func.functional_call`` + ``vmap``).
    """
    from torch.func import functional_call, vmap

    def one(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, p, (x,))                             # [N, C]
        return (nn.functional.cross_entropy(logits, y),
                (logits.argmax(-1) == y).float().mean())

    with evaluating(model):
        with torch.no_grad():
            return vmap(one)(dict(params))


def same_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], atol: float = 1e-6) -> bool:
    """Whether two state dicts hold the same keys and (up to ``atol``) the same values."""
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0)
                                        if torch.is_floating_point(a[k]) else torch.equal(a[k], b[k])
                                        for k in a)


# --------------------------------------------------------------------------------------------
# The result every merging operator returns
# --------------------------------------------------------------------------------------------

@dataclass
class Merged:
    """A merged state dict and how it was made.

    ``state``: the merged weights (all keys of the first input; merged ones replaced).
    ``method``: the operator's name; ``hyper``: its hyper-parameters; ``seconds``: wall time;
    ``info``: what the operator found out on the way (kept shares, learned coefficients, ...).
    """

    state: StateDict
    method: str
    hyper: dict = field(default_factory=dict)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def into(self, model: nn.Module, strict: bool = False) -> nn.Module:
        """A new copy of ``model`` with the merged weights loaded (``model`` is unchanged)."""
        return with_state(model, self.state, strict=strict)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"Merged({self.method}; {hyper}; {len(self.state)} tensors; {self.seconds * 1e3:.1f} ms)"
