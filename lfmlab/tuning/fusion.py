"""AdapterFusion (Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for
Transfer Learning", EACL; survey §2.1.2).

Two stages, the base model frozen throughout:

1. **knowledge extraction.** One adapter per source task n = 1..N, each trained on its own task
   alone (single-task adapters, ST-A; :func:`train_sources`). Their weights are never changed
   again, so nothing a task learned can be overwritten by another ("non-destructive").
2. **knowledge composition.** For a target task m, a *fusion layer* at every adapter site learns
   which adapters to listen to, token by token. With h_{l,t} the sub-layer's output at layer l
   and position t, and z_{l,t,n} = adapter_n(h_{l,t}) the output of adapter n (paper, eq. 3):

       s_{l,t} = softmax( h_{l,t}ᵀ Q_l ⊗ z_{l,t,n}ᵀ K_l )          (an attention over n)
       z'_{l,t,n} = z_{l,t,n}ᵀ V_l
       o_{l,t} = s_{l,t}ᵀ Z'_{l,t}

   Only Q_l, K_l, V_l learn, on the target task's data, with the loss of the task plus the
   paper's regulariser λ Σ_l ‖I − V_l‖² that keeps V near the identity (eq. 4). V starts at the
   identity and Q, K at small random values, so the untrained fusion layer is close to the
   *uniform* mixture (1/N) Σ_n z_n: that is the null method the notebook's claim must beat.

The target task's own single-task adapter is among the N, so fusion can always fall back on it;
what fusion adds is the knowledge of the other tasks, which pays most when the target has
little data (the paper's low-resource tasks).

Simplified here: the adapters are lfmlab's Houlsby adapters (after attention and after the MLP,
:mod:`lfmlab.tuning.adapters`), trained without their layer norms so that all of them share one
frozen base model, and a fusion layer sits at each of those sites (the paper's adapters and
fusion sit after the feed-forward block only); z_n includes the adapter's residual (z_n = h + Δ_n);
one attention head; no softmax-temperature schedule; the source adapters are trained on facts'
question tasks of world-lm (one relation per task), not on GLUE.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.params import count, device_of, evaluating, frozen_copy, replace_module
from lfmlab.tuning.adapters import WithAdapter, adapter_sites, adapter_tuning
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult, fit

__all__ = ["FusionLayer", "train_sources", "fuse", "adapter_fusion", "fusion_layers", "fusion_weights", "v_penalty",
           "FusionStudy", "study"]


class FusionLayer(nn.Module):
    """The fusion attention of one site over N frozen adapters: query from h, keys and values
    from each adapter's output z_n (eq. 3). ``weights`` keeps the last attention [..., N]."""

    def __init__(self, adapters: Sequence[nn.Module], d: int, seed: int = 0, init_std: float = 0.02):
        super().__init__()
        if not adapters:
            raise ValueError("AdapterFusion needs at least one adapter per site")
        self.adapters = nn.ModuleList(adapters).requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        self.query = nn.Parameter(torch.randn(d, d, generator=g) * init_std)   # Q_l
        self.key = nn.Parameter(torch.randn(d, d, generator=g) * init_std)     # K_l
        self.value = nn.Parameter(torch.eye(d))                                # V_l = I at the start
        self.weights: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:                   # [..., d] -> [..., d]
        z = torch.stack([a(h) for a in self.adapters], dim=-2)             # [..., N, d]
        q = h @ self.query                                                 # [..., d]
        k = z @ self.key                                                   # [..., N, d]
        s = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1), dim=-1)        # [..., N]
        self.weights = s.detach()
        return (s.unsqueeze(-2) @ (z @ self.value)).squeeze(-2)             # Σ_n s_n z_n V


def train_sources(model: nn.Module, tasks: Mapping[str, object], bottleneck: int = 8,
                  config: TrainConfig | None = None, callback: Callback | None = None) -> dict[str, TuneResult]:
    """Stage 1: a single-task adapter per source task (``{name: LMData}``), each trained alone on a
    frozen copy of ``model`` (adapters only: the layer norms stay the base model's, shared)."""
    if not tasks:
        raise ValueError("AdapterFusion needs at least one source task")
    return {name: adapter_tuning(model, data, bottleneck, config=config, callback=callback, layer_norms=False)
            for name, data in tasks.items()}


def fuse(model: nn.Module, sources: Mapping[str, TuneResult | nn.Module], seed: int = 0) -> nn.Module:
    """A frozen copy of ``model`` with a fusion layer over the sources' adapters at every site.

    ``sources``: trained single-task adapter models (or their results), one per task, built on
    ``model``. The adapters are copied; the sources stay as they are. Trainable: Q, K, V only.
    """
    if not sources:
        raise ValueError("AdapterFusion needs at least one source adapter")
    models = [getattr(s, "model", s) for s in sources.values()]
    sites = adapter_sites(model)
    for name, m in zip(sources, models):
        missing = [s for s in sites if not isinstance(m.get_submodule(s), WithAdapter)]
        if missing:
            raise ValueError(f"source {name!r} has no adapter at {missing[0]!r}: train the sources with "
                             "train_sources (or adapter_tuning) on this model")
    new = frozen_copy(model)
    d = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.n_embd
    device = device_of(model)
    for k, site in enumerate(sites):
        adapters = [copy.deepcopy(m.get_submodule(site).adapter) for m in models]
        layer = FusionLayer(adapters, d, seed=seed * 1000 + k).to(device)
        replace_module(new, site, WithAdapter(new.get_submodule(site), layer))
    return new.eval()


def fusion_layers(model: nn.Module) -> list[FusionLayer]:
    return [m for m in model.modules() if isinstance(m, FusionLayer)]


def v_penalty(model: nn.Module) -> torch.Tensor:
    """Σ_l ‖I − V_l‖² over the fusion layers of ``model`` (the paper's eq. 4 regulariser)."""
    layers = fusion_layers(model)
    eye = torch.eye(layers[0].value.shape[0], device=layers[0].value.device)
    return sum(((eye - f.value) ** 2).sum() for f in layers)


def adapter_fusion(model: nn.Module, sources: Mapping[str, TuneResult | nn.Module], data,
                   config: TrainConfig | None = None, callback: Callback | None = None, lam: float = 0.01,
                   ) -> TuneResult:
    """Stage 2: learn the fusion layers (Q, K, V) on the target task ``data``; adapters and base
    stay frozen. ``lam``: the weight of λ Σ ‖I − V‖². ``result.info["sources"]`` names the
    adapters in the order of :func:`fusion_weights`' last axis."""
    cfg = config or TrainConfig()
    if lam < 0 or lam != lam:
        raise ValueError(f"the V regulariser λ must be a number ≥ 0, got {lam}")
    new = fuse(model, sources, seed=cfg.seed)

    def loss_fn(m: nn.Module, idx: torch.Tensor) -> torch.Tensor:
        return data.loss(m, idx) + lam * v_penalty(m)

    losses, seconds = fit(new, data, cfg, callback, loss_fn=loss_fn, desc=f"AdapterFusion N={len(sources)}")
    return TuneResult(f"AdapterFusion (N={len(sources)})", new, count(new, trainable_only=True), count(model),
                      losses, seconds, {"sources": list(sources), "lam": lam})


@torch.no_grad()
def fusion_weights(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   ) -> torch.Tensor:
    """The fusion attention s [sites, N] averaged over the real tokens of a batch: how much each
    site listens to each source adapter (rows follow :func:`lfmlab.tuning.adapters.adapter_sites`),
    on the CPU."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    with evaluating(model):
        model(input_ids=input_ids, attention_mask=mask)
    real = mask.bool()
    return torch.stack([f.weights[real].float().mean(0) for f in fusion_layers(model)]).cpu()


@dataclass
class FusionStudy:
    """One AdapterFusion experiment on world-lm's question tasks (one relation per task).

    ``accuracy``: held-out exact match on the target task of each single adapter (by source name),
    of the ``"uniform mixture"`` (the fusion layer before training) and of ``"AdapterFusion"``
    (absent when the study was run untrained). ``weights`` [sites, N]: the fusion attention on the
    target's held-out questions (of the trained fusion, else of the untrained one)."""

    target: str
    sources: dict[str, TuneResult]
    fused: TuneResult | None
    accuracy: dict[str, float]
    weights: torch.Tensor
    tasks: dict = field(repr=False, default_factory=dict)

    @property
    def best_single(self) -> str:
        return max(self.sources, key=lambda n: self.accuracy[n])

    def attention(self, source: str) -> float:
        """The fusion attention on ``source``'s adapter, averaged over sites and tokens."""
        if source not in self.sources:
            raise KeyError(f"{source!r} is not a source; the sources: {', '.join(self.sources)}")
        return float(self.weights[:, list(self.sources).index(source)].mean())


def study(model: nn.Module, tokenizer, relations: Sequence[str], target: str, bottleneck: int = 8,
          source_config: TrainConfig | None = None, fusion_config: TrainConfig | None = None, lam: float = 0.01,
          seed: int = 0, device=None, callback: Callback | None = None) -> FusionStudy:
    """Train a single-task adapter for each relation's questions (:func:`lfmlab.tuning.tasks.world_qa`,
    subjects split by ``seed``), then fuse them for the ``target`` relation (one of them) and score
    every single adapter, the untrained fusion (uniform mixture) and the trained fusion on the
    target's held-out subjects. ``fusion_config=None``: stop before training the fusion (the null)."""
    from lfmlab.tuning import tasks as qa

    if target not in relations:
        raise ValueError(f"the target {target!r} must be one of the source relations {list(relations)}")
    tk = {r: qa.world_qa(tokenizer, relations=(r,), seed=seed, device=device) for r in relations}
    sources = train_sources(model, {r: t.train for r, t in tk.items()}, bottleneck, source_config, callback)
    test = tk[target].test
    accuracy = {r: test.accuracy(s.model) for r, s in sources.items()}
    uniform = fuse(model, sources, seed=seed)
    accuracy["uniform mixture"] = test.accuracy(uniform)
    fused, shown = None, uniform
    if fusion_config is not None:
        fused = adapter_fusion(model, sources, tk[target].train, fusion_config, callback, lam)
        accuracy["AdapterFusion"] = test.accuracy(fused.model)
        shown = fused.model
    probe = test.rows(range(min(64, len(test))))
    weights = fusion_weights(shown, probe.input_ids, probe.attention_mask)
    return FusionStudy(target, sources, fused, accuracy, weights, tk)
