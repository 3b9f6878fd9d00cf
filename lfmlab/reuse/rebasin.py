"""Git Re-Basin (Ainsworth, Hayase & Srinivasa, ICLR 2023; survey §4.2.2).

Hidden units have no fixed order: permuting the units of a hidden layer (the rows of the weight
into it, and the columns of the weight out of it) gives a different point in weight space that
computes the same function. Two networks trained from different seeds usually sit in different
"permutations" of one basin, so the straight line between them crosses a loss barrier. Re-basin
finds, for each hidden layer l, a permutation P_l of model B's units that makes B look like A,
then interpolates A with the permuted B.

* **Weight matching** maximises Σ_l ⟨W_l^A, P_l W_l^B P_{l-1}ᵀ⟩ (Alg. 1 of the paper): one
  linear assignment problem per layer (``scipy.optimize.linear_sum_assignment``), solved in turn,
  repeated until no permutation changes. No data needed.
* **Activation matching** picks P_l so that B's unit activations on data match A's, i.e.
  maximises ⟨Z_l^A, P_l Z_l^B⟩; each layer is one assignment problem.

A :class:`PermutationSpec` says which axis of which tensor each permutation acts on, so the
algorithm works on state dicts of any architecture that has one; :func:`mlp_spec` builds it
for a stack of linear layers (e.g. ``features.0, features.2, head``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from lfmlab.core.params import evaluating
from lfmlab.core.state import StateDict

__all__ = ["PermutationSpec", "mlp_spec", "apply_permutation", "weight_matching", "activation_matching", "Rebasin"]


@dataclass(frozen=True)
class PermutationSpec:
    """``axes[key]``: for each axis of tensor ``key``, the name of the permutation acting on it (or None)."""

    axes: dict[str, tuple[str | None, ...]]

    @property
    def perms(self) -> dict[str, list[tuple[str, int]]]:
        """permutation name -> the (key, axis) pairs it acts on."""
        out: dict[str, list[tuple[str, int]]] = {}
        for key, names in self.axes.items():
            for axis, p in enumerate(names):
                if p is not None:
                    out.setdefault(p, []).append((key, axis))
        return out


def mlp_spec(layers: Sequence[str]) -> PermutationSpec:
    """The spec of an MLP whose linear layers are ``layers`` in order (e.g. ``["features.0", "features.2", "head"]``).

    Hidden layer l (the output of ``layers[l]``, l < last) has permutation ``"P_l"``: it permutes
    rows of ``layers[l].weight`` and ``.bias`` and columns of ``layers[l+1].weight``. The input and
    the output (the classes) are never permuted.
    """
    axes: dict[str, tuple[str | None, ...]] = {}
    for i, name in enumerate(layers):
        p_out = f"P_{i}" if i < len(layers) - 1 else None
        p_in = f"P_{i - 1}" if i > 0 else None
        axes[f"{name}.weight"] = (p_out, p_in)
        axes[f"{name}.bias"] = (p_out,)
    return PermutationSpec(axes)


def _permute(w: torch.Tensor, names: tuple[str | None, ...], perm: Mapping[str, torch.Tensor],
             skip: int | None = None) -> torch.Tensor:
    for axis, p in enumerate(names):
        if p is not None and axis != skip:
            w = torch.index_select(w, axis, perm[p])
    return w


def apply_permutation(
    spec: PermutationSpec, perm: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> StateDict:
    """π(θ): the state dict with every permutation applied (new tensors; keys outside the spec copied).
    ``perm[p]`` [n] says which unit of ``state`` goes to position i: new[i] = old[perm[p][i]]."""
    out = {k: v.clone() for k, v in state.items()}
    for key, names in spec.axes.items():
        out[key] = _permute(state[key], names, perm)
    return out


def _sizes(spec: PermutationSpec, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return {p: state[key].shape[axis] for p, pairs in spec.perms.items() for key, axis in pairs[:1]}


def _lap(score: torch.Tensor) -> torch.Tensor:
    """argmax_P ⟨score, P⟩ over permutations: a linear assignment problem (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    _, cols = linear_sum_assignment(score.detach().double().cpu().numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long, device=score.device)


@dataclass
class Rebasin:
    """The permutations found (``perm[p]``: new order of model B's units), B permuted into A's
    basin (``state``), the method, the number of sweeps and the seconds it took."""

    perm: dict[str, torch.Tensor]
    state: StateDict
    method: str
    sweeps: int
    seconds: float


def weight_matching(spec: PermutationSpec, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                    max_sweeps: int = 100, seed: int = 0) -> Rebasin:
    """Alg. 1 of Git Re-Basin: coordinate ascent on Σ ⟨W^A, π(W^B)⟩, one LAP per permutation, in a
    random order each sweep, until a whole sweep changes nothing. Returns B permuted towards A."""
    start = time.perf_counter()
    sizes = _sizes(spec, state_a)
    dev = state_a[next(iter(spec.axes))].device
    perm = {p: torch.arange(n, device=dev) for p, n in sizes.items()}
    rng = np.random.default_rng(seed)
    names = sorted(sizes)
    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        changed = False
        for p in (names[i] for i in rng.permutation(len(names))):
            n = sizes[p]
            score = torch.zeros(n, n, dtype=torch.float64, device=dev)                # [n_A, n_B]
            for key, axis in spec.perms[p]:
                wa = state_a[key].double().movedim(axis, 0).reshape(n, -1)
                wb = _permute(state_b[key], spec.axes[key], perm, skip=axis).double().movedim(axis, 0).reshape(n, -1)
                score += wa @ wb.T
            new = _lap(score)
            old_value = score[torch.arange(n), perm[p]].sum()
            new_value = score[torch.arange(n), new].sum()
            if new_value > old_value + 1e-12:
                perm[p], changed = new, True
        if not changed:
            break
    return Rebasin(perm, apply_permutation(spec, perm, state_b), "weight matching", sweeps, time.perf_counter() - start)


def activation_matching(
    model: nn.Module,
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    activations: Mapping[str, str],
) -> Rebasin:
    """Match units by their activations on data x [N, ...]: for each permutation p, the module
    ``activations[p]`` (e.g. the ReLU after the layer) is read in both models, Z^A, Z^B [N, n],
    and P_p = argmax ⟨Z^Aᵀ Z^B, P⟩. ``model`` is only a template (its weights are not used or changed)."""
    from torch.func import functional_call

    from lfmlab.core.hooks import capture

    start = time.perf_counter()
    names = list(activations.values())
    feats = []
    with evaluating(model):
        with torch.no_grad():
            for state in (state_a, state_b):
                with capture(model, names) as seen:
                    functional_call(model, dict(state), (x,))
                feats.append({n: seen[n].reshape(-1, seen[n].shape[-1]) for n in names})
    perm = {}
    for p, module in activations.items():
        za, zb = feats[0][module].double(), feats[1][module].double()      # [N, n]
        perm[p] = _lap(za.T @ zb)                                          # ⟨Z^A, P Z^B⟩ = trace(Pᵀ Z^Aᵀ Z^B)
    return Rebasin(perm, apply_permutation(spec, perm, state_b), "activation matching", 1, time.perf_counter() - start)
