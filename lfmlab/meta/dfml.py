"""Data-free meta-learning (DFML): a meta-initialisation from a zoo of task models, without their data.

Survey §5.1-5.2. The setting: N models, each trained by someone else on its own n-way task;
their training data is gone. We want an initialisation θ from which a few gradient steps solve
tasks with *new* classes. Three ways, from least to most use of what the models know:

(a) **weight space** (:func:`weight_average`): θ = (1/N) Σ_m θ_m, or Reptile over the zoo,
    θ ← θ + ε (θ_m - θ) one model at a time (Nichol et al. 2018 with the task solutions given).
    Wang et al. 2022 (survey [174], eqs. 13-14) fit a network that predicts the θ_m from learned
    task embeddings (:mod:`lfmlab.meta.task_embedding`); unfitted, it is the mean.
    Independently trained networks are not aligned (their hidden units and their label orders
    are permuted), so their mean is a poor model: the baseline to beat.
(b) **white-box model inversion, then MAML** (the baseline of PURER, Hu et al. CVPR 2023,
    survey [189]): :func:`invert_zoo` turns every model into pseudo-images of each of its
    labels with :mod:`lfmlab.core.inversion`; each (model, label) becomes a pseudo-class;
    MAML is meta-trained on episodes drawn from those pseudo-classes, mixing models as PURER's
    pseudo-episodes do (:func:`meta_train`). PURER itself keeps the pseudo-images evolving
    against the meta-learner: :mod:`lfmlab.meta.purer`.
(c) **black box: zeroth-order inversion, then MAML** (the baseline of BiDf-MKD, Hu et al.
    ICML 2023, survey [188]): the models are APIs that return only output probabilities.
    Inversion estimates the gradient from outputs alone (``invert_zoo(black_box=True)``);
    meta-training is then the same as (b). BiDf-MKD's own contribution (the bi-level
    distillation of the APIs' soft outputs into the meta-learner, the boundary query set, task
    memory replay) is not implemented here.

Everything is measured the same way as MAML: fine-tune from θ for a few steps on the support
set of a meta-test episode (digits 5-9, never seen by the zoo), score the query set.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.inversion import InversionConfig, synthesise
from lfmlab.meta import maml, pools
from lfmlab.meta.common import cross_entropy
from lfmlab.progress import progress


@dataclass
class Zoo:
    """N task models; ``classes`` [N, n_way]: the pool class behind each label of each model
    (kept for analysis and plots; no DFML method reads it); ``accuracy`` [N]: held-out accuracy
    of each model on its own task; ``seconds``: training time of the whole zoo."""

    models: list[nn.Module]
    classes: torch.Tensor
    accuracy: torch.Tensor
    seconds: float

    def __len__(self) -> int:
        return len(self.models)

    @property
    def n_way(self) -> int:
        return int(self.classes.shape[1])


def train_zoo(pool: torch.Tensor, held_out: torch.Tensor, factory: Callable[[int], nn.Module],
              n_models: int = 20, n_way: int = 5, steps: int = 100, batch_size: int = 128, lr: float = 3e-3,
              generator: torch.Generator | None = None, disjoint: bool = False) -> Zoo:
    """Train ``n_models`` models, each on its own ``n_way`` classes of ``pool`` [C, M, 1, 8, 8].

    Model m is ``factory(m)`` (a fresh, seeded network), trained with Adam for ``steps`` steps on
    random mini-batches of the M images of each of its classes; ``held_out`` [C, M', ...] (the same classes'
    images from another split) measures it. About 10-30 s for 20 small conv nets on a 2-core CPU.
    ``disjoint=True`` gives every model its own classes, as in PURER's zoo (at most C // n_way
    models); otherwise each model draws its classes independently, so two may share one.
    """
    c = pool.shape[0]
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    if disjoint:   # PURER's zoo: no class is shared by two models
        if n_models * n_way > c:
            raise ValueError(f"{n_models} models x {n_way} classes need {n_models * n_way} disjoint classes; "
                             f"the pool has {c}: use at most {c // n_way} models, or disjoint=False")
        classes = torch.rand(c, generator=generator, device=gen_dev).argsort()[:n_models * n_way]
        classes = classes.view(n_models, n_way).to(pool.device)
    else:
        classes = torch.rand(n_models, c, generator=generator, device=gen_dev).argsort(1)[:, :n_way].to(pool.device)
    models, accs = [], []
    start = time.perf_counter()
    for m in progress(range(n_models), desc="train zoo"):
        net = factory(m).to(pool.device).train()
        x = pool[classes[m]].flatten(0, 1)                                       # [n_way * M, 1, 8, 8]
        y = torch.arange(n_way, device=pool.device).repeat_interleave(pool.shape[1])
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(steps):
            rows = torch.randint(len(y), (batch_size,), generator=generator, device=gen_dev).to(y.device)
            loss = F.cross_entropy(net(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            hx = held_out[classes[m]].flatten(0, 1)
            hy = torch.arange(n_way, device=pool.device).repeat_interleave(held_out.shape[1])
            accs.append((net(hx).argmax(-1) == hy).float().mean())
        models.append(net)
    return Zoo(models, classes, torch.stack(accs).cpu(), time.perf_counter() - start)


def weight_average(zoo: Zoo, mode: str = "average", epsilon: float = 0.1, epochs: int = 5,
                   generator: torch.Generator | None = None) -> nn.Module:
    """(a) The weight-space baseline, a new module: the mean of the zoo's parameters
    (``mode="average"``), or Reptile over them (``mode="reptile"``): start from the first model
    and repeat θ ← θ + ε (θ_m - θ) over the models in random order for ``epochs`` passes."""
    states = [{k: v.detach() for k, v in m.state_dict().items()} for m in zoo.models]
    out = copy.deepcopy(zoo.models[0])
    if mode == "average":
        mean = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
    elif mode == "reptile":
        mean = {k: v.clone() for k, v in states[0].items()}
        for _ in range(epochs):
            for m in torch.randperm(len(states), generator=generator).tolist():
                mean = {k: mean[k] + epsilon * (states[m][k] - mean[k]) for k in mean}
    else:
        raise ValueError(f"mode must be 'average' or 'reptile', got {mode!r}")
    out.load_state_dict(mean)
    return out.eval()


@dataclass
class PseudoData:
    """Pseudo-classes inverted from a zoo: ``pool`` [N * n_way, per_class, 1, 8, 8] (class
    m * n_way + j = model m's label j); ``probs`` [N * n_way, per_class, n_way], model m's output
    probabilities on its own images (what a black box would return for them); the mean p(target)
    the models give their images; how many images the models were queried on; wall time."""

    pool: torch.Tensor
    probs: torch.Tensor
    confidence: float
    model_queries: int
    seconds: float
    black_box: bool

    @property
    def n_way(self) -> int:
        return int(self.probs.shape[-1])


def invert_zoo(zoo: Zoo, per_class: int = 20, config: InversionConfig | None = None, black_box: bool = False,
               generator: torch.Generator | None = None) -> PseudoData:
    """(b)/(c) Synthesise ``per_class`` images for every label of every model (one batch per model).

    White box: exact gradients through the model (plus BatchNorm statistics when it has BN
    layers). ``black_box=True``: the model is wrapped as a function returning only its outputs,
    and the gradient is estimated from them (``gradient="zeroth_order"``).
    """
    config = copy.copy(config or InversionConfig())
    config.gradient = "zeroth_order" if black_box else "autograd"
    n_way = zoo.n_way
    targets = torch.arange(n_way).repeat_interleave(per_class)                       # [n_way * per_class]
    images, probs, conf, queries = [], [], [], 0
    start = time.perf_counter()
    for model in progress(zoo.models, desc="invert zoo" + (" (black box)" if black_box else "")):
        api = model
        if black_box:
            def api(x: torch.Tensor, _m: nn.Module = model) -> torch.Tensor:  # outputs only
                with torch.no_grad():
                    return _m(x)
        out = synthesise(api, targets.to(zoo.classes.device), config, generator)
        with torch.no_grad():
            p = torch.softmax(model(out.images), -1)
        images.append(out.images.view(n_way, per_class, *out.images.shape[1:]))
        probs.append(p.view(n_way, per_class, n_way))
        conf.append(out.confidence.mean())
        queries += out.model_queries
    return PseudoData(torch.cat(images), torch.cat(probs), float(torch.stack(conf).mean()), queries,
                      time.perf_counter() - start, black_box)


def meta_train(meta_model: nn.Module, data: PseudoData, config: maml.MAMLConfig, k_shot: int = 1,
               n_query: int = 15, generator: torch.Generator | None = None) -> maml.MetaResult:
    """Meta-train ``meta_model`` (a copy) with MAML on pseudo-episodes of ``data``: n-way episodes
    whose classes are drawn from all models' pseudo-classes, so one episode mixes models (PURER).

    Mixing matters: episodes made of one model's own task (BiDf-MKD's unit) are easy, since the
    model made its images maximally separable. Tried while building notebook 06 (with the query
    loss distilled from the model's soft outputs), they gave an initialisation whose 1-shot
    accuracy peaked after 2-3 inner steps and fell to 55-69 % after 5, against 72-75 % here.
    """
    sample = pools.sampler(data.pool, data.n_way, k_shot, n_query)
    desc = "DFML black box" if data.black_box else "DFML white box"
    return maml.meta_train(meta_model, sample, cross_entropy, config, generator=generator, desc=desc)
