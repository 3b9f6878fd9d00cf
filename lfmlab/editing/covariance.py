"""The uncentred covariance of an MLP's keys, C = E[k kᵀ], over text like the pretraining corpus.

ROME and MEMIT use C to make an edit touch the edited key and as little as possible of every
other key the layer sees. It is estimated once per (model, layer, text) and cached, in memory
and on disk under ``runtime.cache_dir()``; :data:`LAST` records how long the estimate took.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch import nn

from lfmlab.core.hooks import run_until
from lfmlab.core.lm import right_pad
from lfmlab.core.params import device_of, evaluating
from lfmlab.zoo.layers import layers

_MEMO: dict[str, torch.Tensor] = {}
LAST: dict[str, float] = {}  # {"seconds": ..., "tokens": ..., "cached": 0/1}


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


@torch.no_grad()
def key_covariance(model: nn.Module, tokenizer, layer: int, texts: list[str] | None = None,
                   max_tokens: int = 100_000, batch_size: int = 64, ridge: float = 1e-4,
                   use_disk: bool = True) -> torch.Tensor:
    """C = E[k kᵀ] [4d, 4d] (float64, on the model's device) of the keys entering the MLP output
    projection of ``layer``, over ``texts`` (default :func:`corpus_texts`), plus ``ridge`` x its
    mean diagonal on the diagonal so that it is safely invertible. The forward pass stops at that
    projection (nothing after it is needed); each batch's keys are multiplied in float32 and
    summed in float64."""
    from lfmlab import runtime

    texts = corpus_texts() if texts is None else texts
    key = fingerprint(model, layer, texts)
    device = device_of(model)
    path = Path(runtime.cache_dir()) / f"cov-{key}.pt"
    start = time.perf_counter()
    if key in _MEMO:
        LAST.update(seconds=0.0, cached=1)
        return _MEMO[key].to(device)
    if use_disk and path.exists():
        _MEMO[key] = torch.load(path, map_location="cpu", weights_only=True)
        LAST.update(seconds=time.perf_counter() - start, cached=1)
        return _MEMO[key].to(device)
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
    _MEMO[key] = C.cpu()
    if use_disk:
        torch.save(_MEMO[key], path)
    LAST.update(seconds=time.perf_counter() - start, tokens=count, cached=0)
    return C
