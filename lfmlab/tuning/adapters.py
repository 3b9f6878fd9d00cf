"""Adapter tuning (Houlsby et al. 2019; survey §2.1.2) and AdaMix (Wang et al. 2022).

**Houlsby adapters.** A bottleneck module is inserted after the attention sub-layer and after
the MLP sub-layer of every transformer layer, on their output and before the residual sum.
For a sub-layer output h [B, T, d] (the survey's equation in §2.1.2):

    ĥ = f(h W_d) W_u + h,       W_d [d, r] (down), W_u [r, d] (up), f a nonlinearity, r ≪ d.

W_u starts at zero, so ĥ = h and tuning starts exactly at the pretrained model. Houlsby et al.
also train the layer norms (``layer_norms=True``). The adapters stay in the network at
inference: every forward pass runs 2 x n_layers extra bottlenecks, which is the latency the
survey warns about (compare :func:`lfmlab.tuning.lora.merge_and_unload`).

**AdaMix** (mixture of adaptations). Each adapter holds M down- and M up-projections. During
training each forward pass routes *stochastically*: it picks one down and one up projection at
random (paper §3.1), optionally with a consistency loss between two routes (§3.2). At inference
the M projections are **averaged** into one (adaptation merging, §3.3), so AdaMix costs one
adapter at inference while having trained M.

Sites (module names whose output gets an adapter) come from :func:`lfmlab.zoo.layers`: each
layer's attention and MLP modules (GPT-2, GPT-NeoX, Llama); pass names for other models
(:func:`lfmlab.tuning.tasks.encoder_sites` for BERT).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, count, fit, frozen_copy, unfreeze

__all__ = ["Adapter", "MixAdapter", "WithAdapter", "adapter_sites", "add_adapters", "adapter_tuning", "adamix",
           "merge_mixtures"]


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
    """AdaMix: M down- and M up-projections; a random (down, up) pair per training forward,
    the average of all of them at inference (adaptation merging)."""

    def __init__(self, d: int, r: int, experts: int = 4, act: str = "gelu", seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.down_w = nn.Parameter(torch.randn(experts, r, d, generator=g) * 1e-2)  # [M, r, d]
        self.down_b = nn.Parameter(torch.zeros(experts, r))
        self.up_w = nn.Parameter(torch.zeros(experts, d, r))                        # [M, d, r]
        self.up_b = nn.Parameter(torch.zeros(experts, d))
        self.experts, self.act = experts, act
        self.generator = g

    def route(self) -> tuple[int, int]:
        """A random (down, up) expert pair (stochastic routing)."""
        i, j = torch.randint(self.experts, (2,), generator=self.generator).tolist()
        return i, j

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            i, j = self.route()
            wd, bd, wu, bu = self.down_w[i], self.down_b[i], self.up_w[j], self.up_b[j]
        else:  # adaptation merging: the average of the experts' weights
            wd, bd, wu, bu = self.down_w.mean(0), self.down_b.mean(0), self.up_w.mean(0), self.up_b.mean(0)
        f = F.gelu if self.act == "gelu" else F.relu
        return h + F.linear(f(F.linear(h, wd, bd)), wu, bu)


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
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's random state untouched
        torch.manual_seed(seed)
        for k, name in enumerate(sites):
            d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
            ad = Adapter(d, bottleneck, act) if experts == 1 else MixAdapter(d, bottleneck, experts, act, seed + k)
            parent, _, child = name.rpartition(".")
            holder = new.get_submodule(parent) if parent else new
            setattr(holder, child, WithAdapter(getattr(holder, child), ad.to(device)))
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
            d, r = mix.down_w.shape[2], mix.down_w.shape[1]
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
