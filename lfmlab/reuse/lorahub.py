"""LoraHub: solve a new task by mixing LoRA modules trained on other tasks, without gradients.

Huang et al., "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA Composition",
COLM 2024 (survey §4: reuse of trained modules). A hub holds N LoRA modules m_i = (A_i, B_i),
each trained by someone else on its own task. For a new task with only a handful of examples,
LoraHub composes them element-wise (the paper's eq. 1),

.. math::  \\hat m = (w_1 A_1 + \\dots + w_N A_N,\\; w_1 B_1 + \\dots + w_N B_N),\\qquad
           \\Delta W = \\tfrac{\\alpha}{r}\\, \\hat B \\hat A ,

and searches the N weights **gradient-free** (the model is only run forward), minimising the
few examples' cross-entropy plus an L1 penalty (eq. 2),

.. math::  \\min_w\\; L(\\hat m(w)) + \\alpha_{L1} \\textstyle\\sum_i |w_i|, \\qquad w_i \\in [-1.5, 1.5].

Note that ΔW is the product of the *mixed* factors, not the mix of the products: two modules
trained from different random A_i mix into cross terms B_i A_j, and the uniform mix w_i = 1/N
shrinks each module's own term by N². That is why the weights must be searched.

The optimiser is CMA-ES (the ``cma`` package, as black-box tuning in notebook 02; the authors
use nevergrad's Shiwa, which picks CMA for this size), starting at w = 0 with step σ0, for
``generations`` generations; every candidate is scored on the same examples in one batch.

Simplifications, stated: LoRA on the attention projections of world-lm (the paper: Flan-T5's
query and value maps); the L1 weight and bounds are the paper's defaults, the budget is ours.
:func:`train_module` is a plain LoRA trainer so that this module can build a hub on its own.

>>> hub = [train_module(model, tok, prompts_i, targets_i, seed=i) for i, (...) in enumerate(tasks)]
>>> r = lorahub(model, tok, hub, few_prompts, few_targets)
>>> r.weights, lfmlab.core.lm.exact_match(r.model, tok, test_prompts, test_targets)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lfmlab import validate
from lfmlab.core.lm import pair_batch, token_logprobs
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.progress import progress
from lfmlab.zoo.lora import add_lora, lora_modules, merge_and_unload

__all__ = ["Module", "LoraHubConfig", "LoraHubResult", "train_module", "compose", "mixed", "lorahub",
           "random_search", "example_loss"]

Module = dict[str, tuple[torch.Tensor, torch.Tensor]]   # layer name -> (A [r, in], B [out, r])


@dataclass
class LoraHubConfig:
    """CMA-ES over the N module weights (the paper's defaults for the L1 weight and bounds)."""

    generations: int = 40
    popsize: int | None = None      # None: CMA-ES's default 4 + ⌊3 ln N⌋
    sigma0: float = 0.5
    l1: float = 0.05                # α_L1 of eq. 2
    bound: float = 1.5              # every w_i in [-bound, bound]
    seed: int = 0

    def __post_init__(self):
        validate.number("generations", self.generations, 1, integer=True, fix="at least 1 generation")
        if self.popsize is not None:
            validate.number("popsize", self.popsize, 2, integer=True, fix="at least 2 candidates per generation")
        validate.number("sigma0", self.sigma0, 0.0, lo_open=True, fix="CMA-ES's first step, e.g. 0.5")
        validate.number("l1", self.l1, 0.0, fix="the L1 weight, ≥ 0 (0 switches the penalty off)")
        validate.number("bound", self.bound, 0.0, lo_open=True, fix="the weights' bound, e.g. 1.5")


@dataclass
class LoraHubResult:
    """The composed model (LoRA merged into a new plain model), the weights found, the best
    penalised loss per generation, the forward passes spent and the wall time."""

    model: nn.Module
    weights: np.ndarray
    curve: list[float] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0


def example_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean per-token cross-entropy of the targets of a :class:`~lfmlab.core.lm.PairBatch`."""
    tok = token_logprobs(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch.labels)
    return -tok.logp.sum() / tok.is_target.sum().clamp_min(1)


def train_module(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], targets: list[str], rank: int = 4,
                 steps: int = 150, batch_size: int = 32, lr: float = 3e-3, seed: int = 0, show: bool = False) -> Module:
    """Train one LoRA module (attention projections, rank ``rank``, α = 2r) on (prompt, target)
    pairs with Adam; returns its factors. ``model`` is unchanged."""
    if not prompts or len(prompts) != len(targets):
        raise ValueError(f"train_module needs as many targets as prompts, at least one; got {len(prompts)} "
                         f"prompts and {len(targets)} targets")
    dev = device_of(model)
    net = add_lora(model, rank=rank, seed=seed).train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in progress(range(steps), desc="LoRA module", disable=not show):
        rows = torch.randint(len(prompts), (min(batch_size, len(prompts)),), generator=gen).tolist()
        loss = example_loss(net, pair_batch(tokenizer, [prompts[i] for i in rows], [targets[i] for i in rows], dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {name: (m.lora_A.detach().clone(), m.lora_B.detach().clone()) for name, m in lora_modules(net).items()}


def _check_hub(modules: Sequence[Module]) -> None:
    if len(modules) < 1:
        raise ValueError("the hub is empty: train at least one module with lorahub.train_module")
    names = set(modules[0])
    for i, m in enumerate(modules[1:], 1):
        if set(m) != names or any(m[k][0].shape != modules[0][k][0].shape for k in names):
            raise ValueError(f"module {i} adapts other layers or has another rank than module 0: "
                             "LoraHub mixes modules of one layout")


def _hub_model(model: nn.Module, modules: Sequence[Module]) -> nn.Module:
    """A LoRA-wrapped copy of ``model`` with the hub's layout (its rank), ready for :func:`compose`."""
    _check_hub(modules)
    return add_lora(model, rank=next(iter(modules[0].values()))[0].shape[0]).eval()


def _search_setup(model: nn.Module, tokenizer: Tokenizer, modules: Sequence[Module], prompts: list[str],
                  targets: list[str]):
    """(hub model, the examples as one batch): what every candidate of a search is scored with."""
    if not prompts or len(prompts) != len(targets):
        raise ValueError("the search needs a few examples: as many targets as prompts, at least one")
    return _hub_model(model, modules), pair_batch(tokenizer, prompts, targets, device_of(model))


@torch.no_grad()
def compose(hub_model: nn.Module, modules: Sequence[Module], weights) -> nn.Module:
    """Set every LoRA layer of ``hub_model`` (from :func:`add_lora`) to Â = Σ w_i A_i, B̂ = Σ w_i B_i
    (eq. 1), in place; returns it."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    if w.numel() != len(modules) or not torch.isfinite(w).all():
        raise ValueError(f"need {len(modules)} finite weights, got {np.asarray(weights).tolist()}")
    for name, layer in lora_modules(hub_model).items():
        layer.lora_A.copy_(sum(float(wi) * m[name][0] for wi, m in zip(w, modules)))
        layer.lora_B.copy_(sum(float(wi) * m[name][1] for wi, m in zip(w, modules)))
    return hub_model


def mixed(model: nn.Module, modules: Sequence[Module], weights) -> nn.Module:
    """A new plain model: ``model`` with the modules mixed by ``weights`` and merged in."""
    return merge_and_unload(compose(_hub_model(model, modules), modules, weights))


def lorahub(model: nn.Module, tokenizer: Tokenizer, modules: Sequence[Module], prompts: list[str],
            targets: list[str], config: LoraHubConfig | None = None, show: bool = True) -> LoraHubResult:
    """LoraHub's learning stage: CMA-ES over the weights on the few (prompt, target) examples,
    then the composed model (a new one; ``model`` is unchanged)."""
    import cma

    cfg = config or LoraHubConfig()
    hub, batch = _search_setup(model, tokenizer, modules, prompts, targets)
    n = len(modules)
    opts = {"bounds": [-cfg.bound, cfg.bound], "seed": cfg.seed + 1, "verbose": -9}
    if cfg.popsize is not None:
        opts["popsize"] = cfg.popsize
    es = cma.CMAEvolutionStrategy(np.zeros(n), cfg.sigma0, opts)
    curve, evals = [], 0
    start = time.perf_counter()
    for _ in progress(range(cfg.generations), desc=f"LoraHub ({n} modules)", disable=not show):
        cands = es.ask()
        values = [_penalised(hub, modules, batch, w, cfg.l1) for w in cands]
        evals += len(cands)
        es.tell(cands, values)
        curve.append(float(min(es.result.fbest, min(values))))
    best = np.asarray(es.result.xbest, dtype=np.float64)
    out = merge_and_unload(compose(hub, modules, best))
    return LoraHubResult(out, best, curve, evals, time.perf_counter() - start)


@torch.no_grad()
def _penalised(hub: nn.Module, modules: Sequence[Module], batch, w, l1: float) -> float:
    """Eq. 2 for one candidate: the examples' loss under the mix w plus α_L1 Σ|w_i|."""
    return float(example_loss(compose(hub, modules, w), batch)) + l1 * float(np.abs(w).sum())


def random_search(model: nn.Module, tokenizer: Tokenizer, modules: Sequence[Module], prompts: list[str],
                  targets: list[str], evaluations: int, config: LoraHubConfig | None = None) -> LoraHubResult:
    """The baseline (and null) of the search: ``evaluations`` weight vectors drawn uniformly from
    [-bound, bound]^N, the best by the same objective (eq. 2) kept: LoraHub's budget without CMA-ES."""
    cfg = config or LoraHubConfig()
    validate.number("evaluations", evaluations, 1, integer=True, fix="at least one candidate")
    hub, batch = _search_setup(model, tokenizer, modules, prompts, targets)
    rng = np.random.default_rng(cfg.seed)
    start, best, best_w, curve = time.perf_counter(), float("inf"), np.zeros(len(modules)), []
    for _ in range(int(evaluations)):
        w = rng.uniform(-cfg.bound, cfg.bound, len(modules))
        v = _penalised(hub, modules, batch, w, cfg.l1)
        if v < best:
            best, best_w = v, w
        curve.append(best)
    out = merge_and_unload(compose(hub, modules, best_w))
    return LoraHubResult(out, best_w, curve, int(evaluations), time.perf_counter() - start)
