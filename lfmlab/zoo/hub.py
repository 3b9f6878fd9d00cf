"""Real hub checkpoints (``zoo.load("gpt2")``) for users with a network.

The code path is the ordinary transformers one. It is tested offline on randomly
initialised GPT-2, GPT-NeoX and Llama configs (:func:`random_model`), so the methods support
those layouts by design.
"""
from __future__ import annotations

import os

from lfmlab.zoo.card import ModelCard

TINY = dict(hidden=64, layers=2, heads=4, vocab=1024, positions=128)


def load(name: str):
    """``AutoModelForCausalLM.from_pretrained(name)`` plus its tokenizer, with a clear offline error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in {"", "0"}
        why = ("HF_HUB_OFFLINE is set, so nothing is downloaded" if offline
               else "it is not in the local Hugging Face cache and could not be downloaded")
        raise OSError(f"Could not load hub model {name!r}: {why}. lfmlab's own zoo works offline: "
                      f"try zoo.load('world-lm'), or run once with a network to cache {name!r}. "
                      f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    card = ModelCard(name=name, summary=f"hub checkpoint {name}", architecture=model.config.model_type,
                     parameters=sum(p.numel() for p in model.parameters()),
                     trained_on="see the model's page on the Hugging Face Hub", source="hub",
                     regenerate=f"AutoModelForCausalLM.from_pretrained({name!r})")
    return model, tokenizer, card


def random_model(arch: str = "gpt2", seed: int = 0, **sizes: int):
    """A randomly initialised causal LM of a hub architecture: ``gpt2``, ``gpt_neox`` or ``llama``."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
    )

    s = {**TINY, **sizes}
    if arch == "gpt2":
        config = GPT2Config(n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"], bos_token_id=0, eos_token_id=0,
                            vocab_size=s["vocab"], n_positions=s["positions"])
    elif arch == "gpt_neox":
        config = GPTNeoXConfig(hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                               num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                               vocab_size=s["vocab"], max_position_embeddings=s["positions"])
    elif arch == "llama":
        config = LlamaConfig(hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                             num_attention_heads=s["heads"], num_key_value_heads=s["heads"],
                             intermediate_size=4 * s["hidden"], vocab_size=s["vocab"],
                             max_position_embeddings=s["positions"])
    else:
        raise ValueError(f"unknown architecture {arch!r}: use 'gpt2', 'gpt_neox' or 'llama'")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
