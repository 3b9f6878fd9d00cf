"""Real hub checkpoints (``zoo.load("gpt2")``) for users with a network.

The code path is the ordinary transformers one. It is tested offline on randomly
initialised GPT-2, GPT-NeoX and Llama configs (:func:`random_model`), so the methods support
those layouts by design.

Offline, fast and quiet: :func:`load` first looks in the local Hugging Face cache only
(``local_files_only=True``, no network). Only when the model is not cached does it ask whether
the hub answers at all (:func:`reachable`: one TCP connection with a short timeout); without a
network it fails at once with lfmlab's own message, instead of printing huggingface_hub's
"Retrying in 1s [Retry 1/5]" lines into the notebook and waiting through them. With a network,
the call is the ordinary ``from_pretrained`` download.
"""
from __future__ import annotations

import os

from lfmlab.zoo.card import ModelCard

TINY = dict(hidden=64, layers=2, heads=4, vocab=1024, positions=128)


def reachable(timeout: float = 2.0, endpoint: str | None = None) -> bool:
    """Whether the hub (``HF_ENDPOINT``, default https://huggingface.co) accepts a TCP connection
    within ``timeout`` seconds. No request is sent; a failed name lookup counts as unreachable."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT", "") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    answered: list[bool] = []

    def connect() -> None:  # in a thread: a name lookup is not bound by the socket's timeout
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answered)


def _pretrained(name: str, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(name, **kwargs), AutoModelForCausalLM.from_pretrained(name, **kwargs)


def _offline_error(name: str, why: str, err: Exception | None = None) -> OSError:
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err is not None else ""
    return OSError(f"Could not load hub model {name!r}: {why}. lfmlab's own zoo works offline: "
                   f"try zoo.load('world-lm'), or run once with a network to cache {name!r}.{detail}")


def load(name: str, timeout: float = 2.0):
    """``AutoModelForCausalLM.from_pretrained(name)`` plus its tokenizer: from the local cache when
    it is there, else downloaded; without a network, a clear error within ``timeout`` seconds."""
    try:
        tokenizer, model = _pretrained(name, local_files_only=True)
    except (OSError, ValueError) as cached_err:
        if os.environ.get("HF_HUB_OFFLINE", "") not in {"", "0"}:
            raise _offline_error(name, "HF_HUB_OFFLINE is set, so nothing is downloaded, and it is not in "
                                 "the local Hugging Face cache", cached_err) from None
        if not reachable(timeout):
            raise _offline_error(name, f"it is not in the local Hugging Face cache and the hub could not be "
                                 f"reached (tried for up to {timeout:g} s; no network?)") from None
        try:
            tokenizer, model = _pretrained(name)
        except (OSError, ValueError) as err:
            raise _offline_error(name, "it is not in the local Hugging Face cache and could not be "
                                 "downloaded", err) from None
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
