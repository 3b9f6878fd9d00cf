"""(IA)³: infused adapter by inhibiting and amplifying inner activations (Liu et al. 2022, "Few-Shot
Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning"; survey §2.1).

Three learned vectors per layer rescale activations element-wise (paper §3.3):

    attention:  softmax(Q (l_k ⊙ K)ᵀ / √d) (l_v ⊙ V)         l_k, l_v ∈ R^{d_k}
    MLP:        (l_ff ⊙ γ(W₁ x)) W₂                            l_ff ∈ R^{d_ff}

with every l initialised to 1, so training starts *exactly* at the pretrained model. Only the l
learn: 2·d + d_ff numbers per layer (4,608 of world-lm's 1.34M, 0.34 %; LoRA at rank 4 on the
attention trains 18,432).
Like LoRA, the vectors can be folded into the weights after training (l_k, l_v scale rows of the
key and value projections, l_ff scales the input columns of W₂), so the deployed model has the
base architecture and cost: :func:`merge_and_unload`.

Where the vectors sit, by layout (through :func:`lfmlab.zoo.layers`): GPT-2's fused ``c_attn``
output [q | k | v] has l on its k and v thirds; GPT-NeoX's fused ``query_key_value`` holds [q, k, v]
per head, so l sits on each head's k and v slices; Llama's separate ``k_proj`` and ``v_proj`` get one
vector each (with grouped-query attention, d_k is the key heads' width). l_ff always scales the input
of the MLP's output projection (W₂). The queries are never scaled, as in the paper. (peft's IA3 on
GPT-2 scales the whole fused ``c_attn`` output, queries included; the test cross-checks against it
with the query third held at 1.)

Simplification: the paper's T-Few recipe also adds unlikelihood and length-normalised losses for
multiple-choice training; here (IA)³ trains with the same next-token loss as every other method of
notebook 02, so the comparison is of the parameterisations alone.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from lfmlab.core.params import count, frozen_copy, replace_module, unfreeze
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit
from lfmlab.zoo.layers import as_weight_layout, in_out_features, layers, weight_in_out

__all__ = ["IA3Linear", "ia3_sites", "add_ia3", "ia3_modules", "merge_and_unload", "ia3"]


class IA3Linear(nn.Module):
    """A frozen linear map with a learned rescaling vector ``l`` (initialised to 1).

    ``where="in"``: y = base(x ⊙ l), l over the input features (the MLP's W₂).
    ``where="out"``: y = base(x) ⊙ s, where s is 1 except at ``index`` (the key and value outputs),
    which hold l; without ``index``, s = l over every output.
    """

    def __init__(self, base: nn.Module, where: str, index: torch.Tensor | None = None):
        super().__init__()
        if where not in ("in", "out"):
            raise ValueError(f"where must be 'in' or 'out', not {where!r}")
        d_in, d_out = in_out_features(base)
        self.base, self.where = base, where
        n = d_in if where == "in" else (len(index) if index is not None else d_out)
        self.register_buffer("index", None if index is None else index.to(base.weight.device))
        self.ia3_l = nn.Parameter(torch.ones(n, device=base.weight.device, dtype=base.weight.dtype))
        self.d_out = d_out

    def scale(self) -> torch.Tensor:
        """The full scaling vector s: [in] for ``where="in"``, [out] for ``where="out"``."""
        if self.where == "in" or self.index is None:
            return self.ia3_l
        ones = torch.ones(self.d_out, device=self.ia3_l.device, dtype=self.ia3_l.dtype)
        return ones.scatter(0, self.index, self.ia3_l)                   # differentiable in ia3_l

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [..., in] -> [..., out]
        if self.where == "in":
            return self.base(x * self.ia3_l)
        return self.base(x) * self.scale()

    @torch.no_grad()
    def merged_base(self) -> nn.Module:
        """A copy of the base map with s folded in: W' = W diag(s) (input) or diag(s) W, b' = s ⊙ b."""
        new = copy.deepcopy(self.base)
        s = self.scale().detach()
        w = weight_in_out(self.base)                                         # [in, out]
        folded = w * s[:, None] if self.where == "in" else w * s[None, :]
        new.weight.copy_(as_weight_layout(new, folded))
        if self.where == "out" and getattr(new, "bias", None) is not None:
            new.bias.mul_(s)
        return new


def _kv_index(arch: str, hidden: int, heads: int) -> torch.Tensor:
    """Positions of the keys and values in a fused q/k/v projection's output."""
    if arch == "gpt2":                                    # [q | k | v], each `hidden` wide
        return torch.arange(hidden, 3 * hidden)
    hd = hidden // heads                                  # GPT-NeoX: per head [q, k, v], each hd wide
    return torch.cat([torch.arange(h * 3 * hd + hd, (h + 1) * 3 * hd) for h in range(heads)])


def ia3_sites(model: nn.Module) -> list[tuple[str, str, torch.Tensor | None]]:
    """(module name, "in"/"out", output index or None) for every vector (IA)³ adds to ``model``."""
    layout = layers(model)
    sites = []
    for i in range(layout.n_layers):
        attn = layout.attn_name(i)
        if layout.arch == "gpt2":
            sites.append((f"{attn}.c_attn", "out", _kv_index("gpt2", layout.hidden, layout.n_heads)))
        elif layout.arch == "gpt_neox":
            sites.append((f"{attn}.query_key_value", "out", _kv_index("gpt_neox", layout.hidden, layout.n_heads)))
        else:                                            # llama: separate key and value projections
            sites += [(f"{attn}.k_proj", "out", None), (f"{attn}.v_proj", "out", None)]
        sites.append((layout.mlp_out_name(i), "in", None))
    return sites



def add_ia3(model: nn.Module, also_train: Sequence[str] = ()) -> nn.Module:
    """A frozen copy of ``model`` with (IA)³ vectors at every site; only the vectors (and the
    ``also_train`` prefixes) are trainable. Its output equals the model's until they are trained."""
    new = frozen_copy(model)
    for name, where, index in ia3_sites(new):
        replace_module(new, name, IA3Linear(new.get_submodule(name), where, index))
    unfreeze(new, also_train)
    return new


def ia3_modules(model: nn.Module) -> dict[str, IA3Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, IA3Linear)}


def merge_and_unload(model: nn.Module) -> nn.Module:
    """A new plain model (base architecture) with every vector folded into its weights."""
    new = copy.deepcopy(model)
    for name, m in ia3_modules(new).items():
        replace_module(new, name, m.merged_base())
    return new.eval()


def ia3(model: nn.Module, data, config: TrainConfig | None = None, callback: Callback | None = None,
        also_train: Sequence[str] = ()) -> TuneResult:
    """Train (IA)³ vectors on a copy of ``model``. ``result.model`` keeps the vectors as modules
    (call :func:`merge_and_unload` to deploy at the base model's cost)."""
    cfg = config or TrainConfig()
    new = add_ia3(model, also_train)
    losses, seconds = fit(new, data, cfg, callback, desc="(IA)³")
    return TuneResult("(IA)³", new, count(new, trainable_only=True), count(model), losses, seconds,
                      {"sites": len(ia3_modules(new))})
