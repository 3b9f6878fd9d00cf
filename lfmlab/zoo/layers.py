"""Where the blocks, attention and MLP modules live in a causal LM.

Methods that reach inside a transformer (ROME, MEMIT, adapters, prefixes, causal tracing)
find modules only through :func:`layers`, so that GPT-2, GPT-NeoX and Llama layouts all work.
GPT-2 uses ``Conv1D`` (weight shape ``[in, out]``); the others use ``nn.Linear``
(``[out, in]``): :func:`weight_in_out` hides the difference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# arch -> (blocks, attention, mlp, mlp input proj, mlp output proj, token embedding, final norm)
_LAYOUTS = {
    "gpt2": ("transformer.h", "attn", "mlp", "c_fc", "c_proj", "transformer.wte", "transformer.ln_f"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp", "dense_h_to_4h", "dense_4h_to_h",
                 "gpt_neox.embed_in", "gpt_neox.final_layer_norm"),
    "llama": ("model.layers", "self_attn", "mlp", "up_proj", "down_proj", "model.embed_tokens", "model.norm"),
}


@dataclass(frozen=True)
class Layout:
    """Names of the parts of a causal LM. ``*_name(i)`` give dotted module names for layer i."""

    arch: str
    n_layers: int
    hidden: int
    n_heads: int
    block_prefix: str
    attn_suffix: str
    mlp_suffix: str
    mlp_in_suffix: str
    mlp_out_suffix: str
    embed_name: str
    final_norm_name: str

    def block_name(self, i: int) -> str:
        return f"{self.block_prefix}.{self._check(i)}"

    def attn_name(self, i: int) -> str:
        return f"{self.block_name(i)}.{self.attn_suffix}"

    def mlp_name(self, i: int) -> str:
        return f"{self.block_name(i)}.{self.mlp_suffix}"

    def mlp_in_name(self, i: int) -> str:
        return f"{self.mlp_name(i)}.{self.mlp_in_suffix}"

    def mlp_out_name(self, i: int) -> str:
        return f"{self.mlp_name(i)}.{self.mlp_out_suffix}"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    def _check(self, i: int) -> int:
        if not 0 <= i < self.n_layers:
            raise IndexError(f"layer {i} is out of range: this {self.arch} model has layers 0..{self.n_layers - 1}")
        return i


def layers(model: nn.Module) -> Layout:
    """The :class:`Layout` of a GPT-2, GPT-NeoX or Llama causal LM (``model.config.model_type``)."""
    config = getattr(model, "config", None)
    arch = getattr(config, "model_type", None)
    if arch not in _LAYOUTS:
        known = ", ".join(sorted(_LAYOUTS))
        raise ValueError(f"lfmlab does not know the layer layout of model type {arch!r}; known: {known}.")
    blocks, attn, mlp, mlp_in, mlp_out, embed, norm = _LAYOUTS[arch]
    n_layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    n_heads = getattr(config, "n_head", None) or config.num_attention_heads
    layout = Layout(arch, n_layers, hidden, n_heads, blocks, attn, mlp, mlp_in, mlp_out, embed, norm)
    model.get_submodule(layout.mlp_out_name(0))  # fail early if the names do not resolve
    return layout


def module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def weight_in_out(mod: nn.Module) -> torch.Tensor:
    """The weight of a linear map as ``[in, out]`` (a view: editing it edits the module).

    GPT-2's ``Conv1D`` stores ``[in, out]``; ``nn.Linear`` stores ``[out, in]``.
    """
    if isinstance(mod, nn.Linear):
        return mod.weight.data.T
    if is_conv1d(mod):
        return mod.weight.data
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(mod).__name__}")


def is_conv1d(mod: nn.Module) -> bool:
    """Whether ``mod`` is transformers' GPT-2 ``Conv1D`` (y = x W + b, W stored ``[in, out]``)."""
    return type(mod).__name__ == "Conv1D"


def as_weight_layout(mod: nn.Module, in_out: torch.Tensor) -> torch.Tensor:
    """A matrix given as ``[in, out]`` (an update, say) in the layout ``mod.weight`` stores:
    unchanged for ``Conv1D``, transposed for ``nn.Linear``. The inverse of :func:`weight_in_out`."""
    if is_conv1d(mod):
        return in_out
    if isinstance(mod, nn.Linear):
        return in_out.T
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(mod).__name__}")


def in_out_features(mod: nn.Module) -> tuple[int, int]:
    """(in, out) sizes of a linear map, whichever layout stores it."""
    if is_conv1d(mod):
        return mod.weight.shape[0], mod.weight.shape[1]
    if isinstance(mod, nn.Linear):
        return mod.in_features, mod.out_features
    raise TypeError(f"expected nn.Linear or Conv1D, got {type(mod).__name__}")
