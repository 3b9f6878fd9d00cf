"""ZipIt! (Stoica et al., "ZipIt! Merging models from different tasks without training", ICLR 2024;
survey §4.2.2).

Re-basin pairs every unit of model A with one unit of model B. ZipIt relaxes this in two ways:

* **zip, not permute**: the 2n units of a layer of both models are paired greedily by the
  correlation of their activations, and a pair may come from *the same* model (two redundant
  units of A are merged, freeing a slot for a unit only B has). A *merge* matrix M [n, 2n]
  averages each pair into one unit; an *unmerge* matrix U [2n, n] copies it back. A layer's
  merged weights are W' = M_l [W^A 0; 0 W^B] U_{l-1}, its bias b' = M_l [b^A; b^B].
* **partial zipping**: only the first ``zip_layers`` hidden layers are merged; after them the
  zipped features are unmerged and fed to what is left of both models, whose outputs are
  averaged. The more layers are zipped, the cheaper and the less accurate the model; zero zipped
  layers is the ensemble of A and B.

This module zips MLPs (linear layers with elementwise activations in between) given as state
dicts and layer names, and returns a small module (:class:`ZippedMLP`) that runs the result.
Not implemented: ZipIt's α (how often a merged feature may be re-merged) and β (the budget of
matches within one model) options; every unit here is matched once, within or across models.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

__all__ = ["zip_matrices", "ZippedMLP", "Zipped", "zipit", "hidden_features"]


def zip_matrices(za: torch.Tensor, zb: torch.Tensor, within: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy ZipIt matching of features za, zb [N, n] -> (M [n, 2n] merge, U [2n, n] unmerge).

    The pair with the highest correlation among the unused features is merged first, until n
    pairs are made. ``within=False`` forbids pairs inside one model (then ZipIt is a permutation
    matching, like re-basin's activation matching).
    """
    n = za.shape[1]
    z = torch.cat([za, zb], 1).double()                                     # [N, 2n]
    z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)
    corr = (z.T @ z) / len(z)                                               # [2n, 2n] correlations
    corr.fill_diagonal_(-float("inf"))
    if not within:
        corr[:n, :n] = -float("inf")
        corr[n:, n:] = -float("inf")
    merge = torch.zeros(n, 2 * n, dtype=za.dtype, device=za.device)
    unmerge = torch.zeros(2 * n, n, dtype=za.dtype, device=za.device)
    order = torch.argsort(corr.flatten(), descending=True).tolist()         # all pairs, best first
    used = torch.zeros(2 * n, dtype=torch.bool)
    r = 0
    for flat in order:
        i, j = divmod(flat, 2 * n)
        if i >= j or used[i] or used[j]:
            continue
        used[i] = used[j] = True
        merge[r, i] = merge[r, j] = 0.5
        unmerge[i, r] = unmerge[j, r] = 1.0
        r += 1
        if r == n:
            break
    return merge, unmerge


class ZippedMLP(nn.Module):
    """Zipped layers (shared), then the rest of A and the rest of B reading the unmerged features;
    the output is the average of both branches' logits. Input x [B, ...] -> logits [B, C]."""

    def __init__(self, shared: list[nn.Linear], unmerge: torch.Tensor | None, rest_a: list[nn.Linear],
                 rest_b: list[nn.Linear], act: nn.Module | None = None):
        super().__init__()
        self.shared, self.rest_a, self.rest_b = nn.ModuleList(shared), nn.ModuleList(rest_a), nn.ModuleList(rest_b)
        self.register_buffer("unmerge", unmerge if unmerge is not None else torch.empty(0))
        self.act = act or nn.ReLU()

    @staticmethod
    def _run(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            h = layer(h)
            if i < len(layers) - 1:
                h = torch.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.shared:
            h = self.act(layer(h))
        if not len(self.rest_b):                                           # fully zipped: one head
            return self._run(self.rest_a, h)
        if self.unmerge.numel():
            n = self.unmerge.shape[0] // 2
            full = h @ self.unmerge.T                                      # [B, 2n]: both models' features
            ha, hb = full[:, :n], full[:, n:]
        else:
            ha = hb = h
        return 0.5 * (self._run(self.rest_a, ha) + self._run(self.rest_b, hb))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0]).to(w.device, w.dtype)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    return layer


@dataclass
class Zipped:
    """The zipped network (``model``), how many hidden layers were zipped, and the seconds it took."""

    model: ZippedMLP
    zip_layers: int
    seconds: float


def hidden_features(state: Mapping[str, torch.Tensor], layers: Sequence[str], x: torch.Tensor) -> list[torch.Tensor]:
    """The post-ReLU features [N, n_l] of every hidden layer of the MLP ``state``."""
    h, out = x.flatten(1), []
    for name in layers[:-1]:
        h = torch.relu(h @ state[f"{name}.weight"].T + state[f"{name}.bias"])
        out.append(h)
    return out


def zipit(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], layers: Sequence[str],
          x: torch.Tensor, zip_layers: int | None = None, within: bool = True) -> Zipped:
    """Zip two MLPs with linear layers ``layers`` (e.g. ``["features.0", "features.2", "head"]``),
    matching their hidden features on inputs x [N, ...].

    ``zip_layers``: how many hidden layers to zip, 0 .. len(layers) - 1 (default: all, which gives
    one merged MLP: the two heads read the same zipped features and, being linear, fold into one).
    The first layer needs no unmerge: both models read the same input. ReLU activations.
    """
    start = time.perf_counter()
    n_hidden = len(layers) - 1
    k = n_hidden if zip_layers is None else int(zip_layers)
    if not 0 <= k <= n_hidden:
        raise ValueError(f"zip_layers must be in 0..{n_hidden}, got {zip_layers}")
    W = {s: [state[f"{n}.weight"] for n in layers] for s, state in (("a", state_a), ("b", state_b))}
    B = {s: [state[f"{n}.bias"] for n in layers] for s, state in (("a", state_a), ("b", state_b))}
    with torch.no_grad():
        za, zb = hidden_features(state_a, layers, x), hidden_features(state_b, layers, x)
        shared: list[nn.Linear] = []
        unmerge: torch.Tensor | None = None                                  # U_{l-1} [2n_{l-1}, n_{l-1}]
        for i in range(k):
            if unmerge is None:
                w_cat = torch.cat([W["a"][i], W["b"][i]], 0)                   # [2n, d_in]: shared input
            else:
                w_cat = torch.block_diag(W["a"][i], W["b"][i]) @ unmerge      # [2n, n_prev]
            b_cat = torch.cat([B["a"][i], B["b"][i]])                          # [2n]
            merge, unmerge = zip_matrices(za[i], zb[i], within)                # M_l [n, 2n], U_l [2n, n]
            shared.append(_linear(merge @ w_cat, merge @ b_cat))               # W' = M_l W_cat U_{l-1}
        rest_a = [_linear(W["a"][i], B["a"][i]) for i in range(k, len(layers))]
        rest_b = [_linear(W["b"][i], B["b"][i]) for i in range(k, len(layers))]
        if k == n_hidden and unmerge is not None:
            # Only the linear heads are left: their average folds into one linear layer.
            n = unmerge.shape[1]
            w_head = 0.5 * (W["a"][-1] @ unmerge[:n] + W["b"][-1] @ unmerge[n:])   # [C, n]
            head = _linear(w_head, 0.5 * (B["a"][-1] + B["b"][-1]))
            model = ZippedMLP(shared, None, [head], [])
        else:
            model = ZippedMLP(shared, unmerge, rest_a, rest_b)
    return Zipped(model.eval(), k, time.perf_counter() - start)
