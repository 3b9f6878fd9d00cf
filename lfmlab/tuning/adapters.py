"""Adapter tuning (Houlsby et al. 2019; survey §2.1.2) and AdaMix (Wang et al. 2022).

**Houlsby adapters.** A bottleneck module is inserted after the attention sub-layer and after
the MLP sub-layer of every transformer layer, on their output and before the residual sum.
For a sub-layer output h [B, T, d] (the survey's equation in §2.1.2):

    ĥ = f(h W_d) W_u + h,       W_d [d, r] (down), W_u [r, d] (up), f a nonlinearity, r ≪ d.

W_u starts at zero, so ĥ = h and tuning starts exactly at the pretrained model. Houlsby et al.
also train the layer norms (``layer_norms=True``). The adapters stay in the network at
inference: every forward pass runs 2 x n_layers extra bottlenecks, which is the latency the
survey warns about (compare :func:`lfmlab.tuning.lora.merge_and_unload`).

**AdaMix** (mixture of adaptations; Wang et al. 2022, "AdaMix: Mixture-of-Adaptations for
Parameter-efficient Model Tuning", EMNLP). Each adapter holds M down-projections (the experts)
and, as in the reference implementation (microsoft/AdaMix), the experts **start identical** (one
initialisation, copied M times) and the **up-projection is shared** by all of them (the paper's
adaptation-module sharing, §3.4). Training routes *stochastically* (§3.1, eq. 3): every forward
pass picks one down-projection per adapter at random, so each expert is updated only on the
batches routed to it and the experts drift apart. At inference the experts' weights are
**averaged** into one adapter (adaptation merging, §3.3, eq. 5),

    W_d = (1/M) Σ_i W_d^(i),        ĥ = f(h W_d) W_u + h,

so AdaMix costs one adapter at inference while having trained M. :func:`mixture_model` gives
the trained mixture's *expected* output (the mean over random routes of its next-token
probabilities), which the averaged adapter should match.

Simplified here: one route per forward pass is shared by the whole batch (as in the reference);
the consistency regulariser (§3.2, eq. 4, a symmetric KL between two routes) is optional
(``consistency > 0``) and off by default; the reference's variant that shares the
down-projection instead, and its per-layer choice between them, are not offered.

Sites (module names whose output gets an adapter) come from :func:`lfmlab.zoo.layers`: each
layer's attention and MLP modules (GPT-2, GPT-NeoX, Llama); pass names for other models
(:func:`lfmlab.tuning.tasks.encoder_sites` for BERT).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.params import count, device_of, frozen_copy, replace_module, unfreeze
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["Adapter", "MixAdapter", "MixtureExpectation", "WithAdapter", "adapter_sites", "add_adapters",
           "adapter_tuning", "adamix", "merge_mixtures", "mixture_model"]


class Adapter(nn.Module):
    """The Houlsby bottleneck: ĥ = f(h W_d + b_d) W_u + b_u + h, with W_u = 0 at the start."""

    def __init__(self, d: int, r: int, act: str = "gelu"):
        super().__init__()
        self.down = nn.Linear(d, r)  # W_d
        self.up = nn.Linear(r, d)    # W_u
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.act = act

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [..., d] -> [..., d]
        f = F.gelu if self.act == "gelu" else F.relu
        return h + self.up(f(self.down(h)))


class MixAdapter(nn.Module):
    """AdaMix: M down-projections that start identical and one shared up-projection; a random
    down-projection per training forward (stochastic routing), their average at inference.

    ``share_up=False`` gives each expert its own up-projection too (routed independently).
    ``stochastic``: None routes at random in train mode and merges in eval mode; True/False
    forces random routing / merging (:func:`mixture_model` sets it to sample routes in eval mode).
    """

    def __init__(self, d: int, r: int, experts: int = 4, act: str = "gelu", seed: int = 0, share_up: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        down = torch.randn(r, d, generator=g) * 1e-2                                  # one init ...
        self.down_w = nn.Parameter(down.expand(experts, r, d).clone())                # ... M copies [M, r, d]
        self.down_b = nn.Parameter(torch.zeros(experts, r))
        ups = 1 if share_up else experts
        self.up_w = nn.Parameter(torch.zeros(ups, d, r))                              # [1 or M, d, r]
        self.up_b = nn.Parameter(torch.zeros(ups, d))
        self.experts, self.act, self.share_up = experts, act, share_up
        self.stochastic: bool | None = None
        self.generator = g

    def route(self) -> tuple[int, int]:
        """A random (down, up) expert pair (stochastic routing; up is 0 when it is shared)."""
        i, j = torch.randint(self.experts, (2,), generator=self.generator).tolist()
        return i, 0 if self.share_up else j

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        sample = self.training if self.stochastic is None else self.stochastic
        if sample:
            i, j = self.route()
            wd, bd, wu, bu = self.down_w[i], self.down_b[i], self.up_w[j], self.up_b[j]
        else:  # adaptation merging: the average of the experts' weights
            wd, bd, wu, bu = self.down_w.mean(0), self.down_b.mean(0), self.up_w.mean(0), self.up_b.mean(0)
        f = F.gelu if self.act == "gelu" else F.relu
        return h + F.linear(f(F.linear(h, wd, bd)), wu, bu)


class _Output:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class MixtureExpectation(nn.Module):
    """The trained AdaMix mixture's expected output: log of the mean next-token probabilities
    over ``samples`` random routes (a Monte-Carlo estimate of E_route[p(y | x, route)])."""

    def __init__(self, mixture: nn.Module, samples: int = 8, seed: int = 0):
        super().__init__()
        self.mixture, self.samples, self.seed = mixture.eval(), samples, seed

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_) -> _Output:
        mixes = [m for m in self.mixture.modules() if isinstance(m, MixAdapter)]
        states = [(m.stochastic, m.generator.get_state()) for m in mixes]
        for k, m in enumerate(mixes):
            m.stochastic = True
            m.generator.manual_seed(self.seed * 1000 + k)
        try:
            p = 0.0
            for _ in range(self.samples):
                p = p + self.mixture(input_ids=input_ids, attention_mask=attention_mask).logits.float().softmax(-1)
        finally:
            for m, (st, gs) in zip(mixes, states):
                m.stochastic = st
                m.generator.set_state(gs)
        return _Output((p / self.samples).clamp_min(1e-30).log())


def mixture_model(result_or_mixture, samples: int = 8, seed: int = 0) -> MixtureExpectation:
    """The expected output of a trained AdaMix mixture (``result.info["mixture"]`` or the model)."""
    mixture = getattr(result_or_mixture, "info", {}).get("mixture", result_or_mixture)
    return MixtureExpectation(mixture, samples, seed)


class WithAdapter(nn.Module):
    """Runs ``inner`` and passes its (first) output through ``adapter``."""

    def __init__(self, inner: nn.Module, adapter: nn.Module):
        super().__init__()
        self.inner, self.adapter = inner, adapter

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if isinstance(out, tuple):  # attention modules return (hidden, weights, ...)
            return (self.adapter(out[0]), *out[1:])
        return self.adapter(out)


def adapter_sites(model: nn.Module) -> list[str]:
    """Each layer's attention and MLP module (Houlsby's two insertion points), via zoo.layers."""
    from lfmlab.zoo import layers

    layout = layers(model)
    return [name for i in range(layout.n_layers) for name in (layout.attn_name(i), layout.mlp_name(i))]


def _norm_params(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)]


def add_adapters(model: nn.Module, bottleneck: int = 16, sites: Sequence[str] | None = None, experts: int = 1,
                 layer_norms: bool = True, act: str = "gelu", seed: int = 0,
                 also_train: Sequence[str] = ()) -> nn.Module:
    """A frozen copy of ``model`` with an adapter after each site (``experts > 1``: AdaMix).

    Trainable: the adapters, the layer norms if ``layer_norms`` (Houlsby), and ``also_train``.
    """
    if bottleneck < 1:
        raise ValueError(f"the adapter bottleneck must be >= 1, got {bottleneck}")
    sites = adapter_sites(model) if sites is None else list(sites)
    new = frozen_copy(model)
    if layer_norms:
        for p in _norm_params(new):
            p.requires_grad_(True)
    device = device_of(model)
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(seed)
        for k, name in enumerate(sites):
            d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
            ad = Adapter(d, bottleneck, act) if experts == 1 else MixAdapter(d, bottleneck, experts, act, seed + k)
            replace_module(new, name, WithAdapter(new.get_submodule(name), ad.to(device)))
    unfreeze(new, also_train)
    return new


def merge_mixtures(model: nn.Module) -> nn.Module:
    """A copy of an AdaMix model whose mixtures are replaced by plain :class:`Adapter` modules
    holding the averaged weights (what AdaMix deploys: one adapter's inference cost)."""
    import copy

    new = copy.deepcopy(model)
    for m in new.modules():
        if isinstance(m, WithAdapter) and isinstance(m.adapter, MixAdapter):
            mix = m.adapter
            d, r = mix.down_w.shape[2], mix.down_w.shape[1]  # the averaged experts: one adapter
            plain = Adapter(d, r, mix.act).to(mix.down_w.device)
            with torch.no_grad():
                plain.down.weight.copy_(mix.down_w.mean(0))
                plain.down.bias.copy_(mix.down_b.mean(0))
                plain.up.weight.copy_(mix.up_w.mean(0))
                plain.up.bias.copy_(mix.up_b.mean(0))
            m.adapter = plain
    return new.eval()


def adapter_tuning(model: nn.Module, data, bottleneck: int = 16, sites: Sequence[str] | None = None,
                   config: TrainConfig | None = None, callback: Callback | None = None, layer_norms: bool = True,
                   also_train: Sequence[str] = ()) -> TuneResult:
    """Houlsby adapter tuning of a copy of ``model``: adapters (and layer norms) learn, nothing else."""
    cfg = config or TrainConfig()
    new = add_adapters(model, bottleneck, sites, 1, layer_norms, seed=cfg.seed, also_train=also_train)
    losses, seconds = fit(new, data, cfg, callback, desc=f"adapters r={bottleneck}")
    return TuneResult(f"adapters (r={bottleneck})", new, count(new, trainable_only=True), count(model), losses,
                      seconds, {"bottleneck": bottleneck, "sites": sites or adapter_sites(model)})


def adamix(model: nn.Module, data, bottleneck: int = 16, experts: int = 4, consistency: float = 0.0,
           sites: Sequence[str] | None = None, config: TrainConfig | None = None, callback: Callback | None = None,
           layer_norms: bool = True, also_train: Sequence[str] = ()) -> TuneResult:
    """AdaMix: train M-expert adapters with stochastic routing; deploy the merged (averaged) adapters.

    ``consistency > 0`` adds the paper's consistency regulariser: a second forward pass with
    another random route and the symmetric KL between the two next-token distributions (it
    doubles the cost of a step; the paper uses it, the routing + merging alone already work).
    ``result.model`` is the merged model; ``result.info["mixture"]`` the trained mixture.
    """
    cfg = config or TrainConfig()
    new = add_adapters(model, bottleneck, sites, experts, layer_norms, seed=cfg.seed, also_train=also_train)
    loss_fn = None
    if consistency > 0:
        def loss_fn(m: nn.Module, idx: torch.Tensor) -> torch.Tensor:
            (la, b), (lb, _) = data.logits(m, idx), data.logits(m, idx)
            from lfmlab.tuning.tasks import lm_loss

            mask = (b.labels[:, 1:] != -100)
            pa, pb = la[:, :-1][mask].float().log_softmax(-1), lb[:, :-1][mask].float().log_softmax(-1)
            sym_kl = 0.5 * (F.kl_div(pa, pb, log_target=True, reduction="batchmean")
                            + F.kl_div(pb, pa, log_target=True, reduction="batchmean"))
            return 0.5 * (lm_loss(la, b.labels) + lm_loss(lb, b.labels)) + consistency * sym_kl
    losses, seconds = fit(new, data, cfg, callback, loss_fn=loss_fn, desc=f"AdaMix M={experts}")
    deployed = merge_mixtures(new)
    return TuneResult(f"AdaMix (r={bottleneck}, M={experts})", deployed, count(new, trainable_only=True),
                      count(model), losses, seconds,
                      {"bottleneck": bottleneck, "experts": experts, "mixture": new,
                       "deployed_parameters": count(deployed) - count(model)})
