"""Prefix tuning (Li & Liang 2021; survey §2.2.1, white-box prompt tuning).

The model stays frozen. Every attention layer l gets n trainable *key and value vectors* that
each position can attend to, as if n extra tokens preceded the input at every layer:

    head_i = Attention(x W_q, [P_k^l; x W_k], [P_v^l; x W_v]),   P_k^l, P_v^l [n, d].

Unlike prompt tuning (:mod:`lfmlab.tuning.prompt`), which only touches the input layer, the
prefix steers every layer directly. Li & Liang found optimising P directly unstable and
**reparameterise** it, P = MLP(P') with a smaller P' [n, d'] and a two-layer tanh MLP
(``reparam=True``, §4.3 of the paper); after training the MLP is dropped and only P is kept
(:func:`bake`). Without the MLP, P is initialised from the keys and values the model computes
for real words (the paper's §7.2 finding that real-word initialisation helps).

The prefix enters through the transformers key/value cache (``cache``; ``past_key_values``
before transformers 5.24), which every causal LM accepts, so GPT-2, GPT-NeoX and Llama work alike;
layer counts and head sizes come from :func:`lfmlab.zoo.layers`. Positions of the real tokens start at n, as in peft.
"""
from __future__ import annotations

import torch
from torch import nn

from lfmlab.core.lm import cache_kwarg, output_cache
from lfmlab.core.params import count, device_of, frozen_copy
from lfmlab.tuning.prompt import Output
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["PrefixLM", "add_prefix", "prefix_tuning", "bake", "word_init"]


def _kv_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head size) of a causal LM."""
    from lfmlab.zoo import layers

    layout = layers(model)
    kv_heads = getattr(model.config, "num_key_value_heads", None) or layout.n_heads
    return layout.n_layers, kv_heads, layout.head_dim


@torch.no_grad()
def word_init(model: nn.Module, n_prefix: int, seed: int = 0) -> torch.Tensor:
    """Keys and values of n random vocabulary tokens, flattened to the prefix layout [n, 2 L H hd]."""
    L, H, hd = _kv_shape(model)
    g = torch.Generator().manual_seed(seed)
    device = device_of(model)
    ids = torch.randint(0, model.get_input_embeddings().weight.shape[0], (1, n_prefix), generator=g).to(device)
    cache = output_cache(model(input_ids=ids, use_cache=True))
    kv = []
    for layer in cache.layers[:L]:
        kv += [layer.keys[0], layer.values[0]]  # each [H, n, hd]
    return torch.stack(kv).permute(2, 0, 1, 3).reshape(n_prefix, 2 * L * H * hd)  # [n, 2L, H, hd] flattened


class PrefixLM(nn.Module):
    """A frozen causal LM with trainable per-layer key/value prefixes (layout of peft's PrefixEncoder).

    ``prefix()`` returns [n, 2 L H hd]: for each prefix position, layer l's key (index 2l) and
    value (index 2l + 1), each [H, hd].
    """

    def __init__(self, base: nn.Module, n_prefix: int, reparam: bool = False, hidden: int = 128,
                 init: torch.Tensor | None = None):
        super().__init__()
        if n_prefix < 1:
            raise ValueError(f"the prefix needs at least one position, got {n_prefix}")
        self.base, self.config, self.n_prefix, self.reparam = base, base.config, int(n_prefix), reparam
        self.L, self.H, self.hd = _kv_shape(base)
        width = 2 * self.L * self.H * self.hd
        d = base.get_input_embeddings().weight.shape[1]
        if reparam:  # P = MLP(P'): P' [n, d], MLP d -> hidden -> 2 L H hd
            self.embedding = nn.Embedding(n_prefix, d)
            self.transform = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, width))
        else:
            self.embedding = nn.Embedding(n_prefix, width)
            if init is not None:
                with torch.no_grad():
                    self.embedding.weight.copy_(init)
        self.to(base.get_input_embeddings().weight.device)

    def prefix(self) -> torch.Tensor:  # [n, 2 L H hd]
        p = self.embedding.weight
        return self.transform(p) if self.reparam else p

    def past(self, batch: int):
        """The prefix as a transformers key/value cache for a batch of ``batch`` rows."""
        from transformers import DynamicCache

        p = self.prefix().view(self.n_prefix, 2 * self.L, self.H, self.hd).permute(1, 2, 0, 3)  # [2L, H, n, hd]
        p = p.unsqueeze(1).expand(-1, batch, -1, -1, -1)  # [2L, B, H, n, hd]
        return DynamicCache([(p[2 * l], p[2 * l + 1]) for l in range(self.L)])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> Output:
        B = input_ids.shape[0]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        full = torch.cat([torch.ones(B, self.n_prefix, dtype=mask.dtype, device=mask.device), mask], dim=1)
        out = self.base(
            input_ids=input_ids, attention_mask=full, use_cache=False, **{cache_kwarg(self.base): self.past(B)}
        )
        return Output(out.logits)  # [B, T, V], aligned with input_ids


def add_prefix(model: nn.Module, n_prefix: int = 8, reparam: bool = False, hidden: int = 128,
               seed: int = 0) -> PrefixLM:
    """A :class:`PrefixLM` over a frozen copy of ``model`` (real-word init without ``reparam``)."""
    base = frozen_copy(model)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(seed)
        init = None if reparam else word_init(base, n_prefix, seed)
        return PrefixLM(base, n_prefix, reparam, hidden, init)


def bake(model: PrefixLM) -> PrefixLM:
    """Drop the reparameterisation MLP and keep the prefix it computes (n x 2 L H hd numbers)."""
    with torch.no_grad():
        p = model.prefix()
    return PrefixLM(model.base, model.n_prefix, reparam=False, init=p).eval()


def prefix_tuning(model: nn.Module, data, n_prefix: int = 8, reparam: bool = True, hidden: int = 128,
                  config: TrainConfig | None = None, callback: Callback | None = None) -> TuneResult:
    """Prefix tuning of a frozen copy of ``model``; ``result.model`` holds the baked prefix."""
    cfg = config or TrainConfig()
    new = add_prefix(model, n_prefix, reparam, hidden, cfg.seed)
    losses, seconds = fit(new, data, cfg, callback, desc=f"prefix tuning n={n_prefix}")
    baked = bake(new)
    return TuneResult(f"prefix tuning (n={n_prefix}{', MLP' if reparam else ''})", baked,
                      count(new, trainable_only=True), count(model), losses, seconds,
                      {"n_prefix": n_prefix, "reparam": reparam, "stored": baked.embedding.weight.numel()})
