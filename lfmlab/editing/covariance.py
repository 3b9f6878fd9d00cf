"""The uncentred covariance of an MLP's keys, C = E[k kᵀ], over text like the pretraining corpus.

ROME and MEMIT use C to make an edit touch the edited key and as little as possible of every
other key the layer sees. It is estimated once per (model, layer, text) and cached, in memory
and on disk under ``runtime.cache_dir()``. :func:`estimate` also says how many tokens it read, how long
it took and whether it came from the cache; :func:`key_covariance` returns the matrix only.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lfmlab.core.hooks import run_until
from lfmlab.core.lm import right_pad
from lfmlab.core.params import device_of, evaluating
from lfmlab.core.types import Tokenizer
from lfmlab.zoo.layers import layers

_MEMO: dict[str, tuple[torch.Tensor, int]] = {}   # the in-process cache: fingerprint -> (C on the CPU, tokens)


@dataclass
class KeyCovariance:
    """C [4d, 4d] (float64, on the model's device), the number of keys it averages, the seconds the
    estimate took (0 when it came from the in-process cache) and whether it came from a cache."""

    matrix: torch.Tensor
    tokens: int
    seconds: float
    cached: bool


def corpus_texts() -> list[str]:
    """Sentences like world-lm's pretraining text: every train fact under every train template."""
    from lfmlab.data import world

    w = world.load()
    return [w.sentence(f, t) for f in w.facts_of(split="train") for t in w.templates[f.relation]["train"]]


def fingerprint(model: nn.Module, layer: int, texts: list[str]) -> str:
    """A hash of everything C depends on: the weights up to ``layer`` and the text."""
    layout = layers(model)
    keep = (layout.embed_name, *(layout.block_name(i) + "." for i in range(layer + 1)))
    h = hashlib.sha1(f"{layout.arch}|{layer}|{len(texts)}".encode())
    for name, p in model.named_parameters():
        if name.startswith(keep) or "wpe" in name:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    h.update("\n".join(texts).encode())
    return h.hexdigest()[:20]


def key_covariance(model: nn.Module, tokenizer: Tokenizer, layer: int, texts: list[str] | None = None,
                   max_tokens: int = 100_000, batch_size: int = 64, ridge: float = 1e-4,
                   use_disk: bool = True) -> torch.Tensor:
    """C = E[k kᵀ] of ``layer``'s MLP keys (see :func:`estimate`, which also reports how it was made)."""
    return estimate(model, tokenizer, layer, texts, max_tokens, batch_size, ridge, use_disk).matrix


@torch.no_grad()
def estimate(model: nn.Module, tokenizer: Tokenizer, layer: int, texts: list[str] | None = None,
             max_tokens: int = 100_000, batch_size: int = 64, ridge: float = 1e-4,
             use_disk: bool = True) -> KeyCovariance:
    """C = E[k kᵀ] [4d, 4d] (float64, on the model's device) of the keys entering the MLP output
    projection of ``layer``, over ``texts`` (default :func:`corpus_texts`), plus ``ridge`` x its
    mean diagonal on the diagonal so that it is safely invertible. The forward pass stops at that
    projection (nothing after it is needed); each batch's keys are multiplied in float32 and
    summed in float64."""
    from lfmlab import runtime

    texts = corpus_texts() if texts is None else texts
    key = fingerprint(model, layer, texts)
    device = device_of(model)
    path = Path(runtime.cache_dir()) / f"cov2-{key}.pt"   # cov2: C and its token count
    start = time.perf_counter()
    if key in _MEMO:
        C, count = _MEMO[key]
        return KeyCovariance(C.to(device), count, 0.0, True)
    if use_disk and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        C, count = saved["C"], int(saved["tokens"])
        _MEMO[key] = (C, count)
        return KeyCovariance(C.to(device), count, time.perf_counter() - start, True)
    name = layers(model).mlp_out_name(layer)
    total, count = None, 0
    with evaluating(model):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for i in range(0, len(texts), batch_size):
            ids, mask = right_pad(tokenizer(texts[i:i + batch_size])["input_ids"], pad, device)
            keys = run_until(model, name, inputs=True, input_ids=ids,
                             attention_mask=mask)[mask.bool()].float()                # [tokens, 4d]
            part = (keys.T @ keys).double()     # float32 within a batch, float64 across batches
            total = part if total is None else total + part
            count += len(keys)
            if count >= max_tokens:
                break
    C = total / count
    C += ridge * C.diagonal().mean() * torch.eye(len(C), dtype=C.dtype, device=C.device)
    _MEMO[key] = (C.cpu(), count)
    if use_disk:
        torch.save({"C": C.cpu(), "tokens": count}, path)
    return KeyCovariance(C, count, time.perf_counter() - start, False)
