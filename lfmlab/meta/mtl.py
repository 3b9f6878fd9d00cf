"""Meta-transfer learning (MTL): Sun, Liu, Chua & Schiele, "Meta-Transfer Learning for Few-Shot
Learning", CVPR 2019 (survey §5.1, [182]; the hard-task meta-batch in detail: TPAMI 2020, [183]).

MTL *transfers* a large pretrained network instead of meta-learning one from scratch:

1. **Transfer.** Train a network on every meta-train class at once (plain classification) and
   keep its feature extractor Θ, frozen from now on.
2. **Scaling and shifting (SS).** Each convolution (W, b) of Θ gets meta-learned per-channel
   weights Φ_S1 (init 1) and Φ_S2 (init 0) (the paper's eq. 3, ⊙ broadcasts over a channel):

   SS(X; W, b; Φ_S1, Φ_S2) = (W ⊙ Φ_S1) * X + (b + Φ_S2)

3. **Meta-training.** The base learner is the linear classifier θ on the features. For each
   task T, the inner loop fits θ on T's support set (eq. 4):

   θ' = θ − β ∇_θ L_T^{support}([Θ; θ], Φ_S1, Φ_S2),

   and the outer loop moves the SS weights by the query loss after it (eq. 5):

   Φ_Si ← Φ_Si − γ ∇_{Φ_Si} L_T^{query}([Θ; θ'], Φ_S1, Φ_S2)   (i = 1, 2).

4. **Hard-task (HT) meta-batch.** After each batch of tasks, each task's *failure class* (the
   label with the lowest query accuracy after the inner loop; ties broken at random, a task
   solved perfectly has none) is recorded; the next batch is made of new tasks drawn only from
   those classes, their images drawn afresh. Normal and hard batches alternate.

Simplifications (measured while building it; the notebook shows the transfer, the budget and Φ):

* Θ is a small conv net (two 3×3 convolutions, **32 channels**; MAML's conv net in notebook 06 has
  8: MTL's point is that the transferred network can be larger than one MAML could meta-train),
  not a ResNet-12, pretrained for 1,000 Adam steps on the 40-class augmented pool of digits 0-4.
  The pool's images are split in halves: the first half pretrains Θ, the second half makes the
  meta-training episodes, so meta-training does not see the images Θ memorised (the paper uses
  one set of images).
* The features are multiplied by one constant that gives them mean norm 1 on the pretraining
  images (the raw norm is about 40 and varies with the seed; without it one β was too large for
  some seeds and too small for others: start accuracies 0.43-0.76 over six seeds, measured).
* The classifier's initialisation θ stays at **zero** and is not meta-learned (the paper's eq. 6
  is dropped). The episodes' labels are random permutations, so the best initialisation is the
  symmetric one; Adam's normalised steps on the noisy gradient of a zero-mean head drove its
  weights to ±0.4 in 400 steps and cost 5-10 points on held-out episodes (measured).
* The inner loop is 5 SGD steps at β = 4 on the normalised features, chosen on the held-out
  images of the meta-train classes at seeds 11-13 from {0.25, 0.5, 1, 2, 4, 8} (1-shot 0.83-0.84
  at β = 4; the paper: 100 steps at β = 0.01 on a ResNet's features).
* Exact second-order outer gradient, vmapped over the tasks (:func:`meta_gradient`: MAML's with the
  head as the adapted parameters, the features computed once per task); SGD in the inner loop,
  Adam (γ = 10⁻³, no decay) in the outer, 16 tasks per batch (the authors' code: γ = 10⁻⁴ for Φ,
  halved every 10 epochs, one or two tasks per batch, a first-order inner loop in its PyTorch
  version).
* Φ_S1 is one scale per *output* channel (the authors' code scales each kernel, one value per
  input-output pair), and Φ_S2 shifts each bias (their PyTorch ResNet has no biases, their
  TensorFlow one does); there is no batch norm to meta-train (their code also trains BN's affine
  parameters).

What it shows on digits (notebook 06): the transferred backbone beats MAML from scratch at an
equal, small meta-training budget; the SS weights themselves move little in that budget.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from lfmlab import validate
from lfmlab.meta import maml, nets, pools
from lfmlab.meta.common import accuracy, cross_entropy
from lfmlab.progress import progress

__all__ = ["MTLConfig", "MTLResult", "SSNet", "adaptation", "halves", "meta_gradient", "meta_train", "mtl",
           "pretrain"]

HEAD = ["head.weight", "head.bias"]


@dataclass
class MTLConfig:
    """Phase 1 (transfer: ``pretrain_*``) and phase 2 (meta-training of the SS weights)."""

    pretrain_steps: int = 1000
    pretrain_lr: float = 3e-3
    pretrain_batch: int = 128
    inner_lr: float = 4.0        # β (on features scaled to mean norm 1)
    inner_steps: int = 5
    outer_lr: float = 1e-3       # γ (Adam), for Φ_S1 and Φ_S2
    meta_batch: int = 16
    iterations: int = 400        # outer steps (normal and hard batches together)
    hard_tasks: bool = True      # the HT meta-batch
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15

    def __post_init__(self):
        for name, lo in (("pretrain_steps", 0), ("iterations", 0), ("inner_steps", 0), ("pretrain_batch", 1),
                         ("meta_batch", 1), ("n_way", 2), ("k_shot", 1), ("n_query", 1)):
            validate.number(name, getattr(self, name), lo, integer=True,
                            fix=f"MTLConfig({name}=...) with a whole number ≥ {lo}")
        for name in ("pretrain_lr", "inner_lr", "outer_lr"):
            validate.number(name, getattr(self, name), 0, 10, lo_open=True,
                            fix=f"a learning rate, e.g. MTLConfig({name}={getattr(MTLConfig, name)})")


class SSNet(nn.Module):
    """A frozen feature extractor with MTL's scaling and shifting, and a linear head.

    Built from a :class:`lfmlab.meta.nets.ConvEmbedding` (its ``.net``: Conv2d, ReLU, MaxPool2d and
    Flatten layers). The convolutions' W and b are **buffers** (frozen); ``scale{i}`` = Φ_S1 and
    ``shift{i}`` = Φ_S2 [C_out] and ``head`` (zero-initialised) are the parameters.
    """

    def __init__(self, features: nn.Module, n_way: int = 5, calibration: torch.Tensor | None = None):
        super().__init__()
        layers = getattr(features, "net", features)
        self.ops: list[tuple] = []
        convs = 0
        for m in layers:
            if isinstance(m, nn.Conv2d):
                dev = m.weight.device
                self.register_buffer(f"w{convs}", m.weight.detach().clone())
                self.register_buffer(f"b{convs}", m.bias.detach().clone() if m.bias is not None
                                     else torch.zeros(m.out_channels, device=dev))
                self.register_parameter(f"scale{convs}", nn.Parameter(torch.ones(m.out_channels, device=dev)))
                self.register_parameter(f"shift{convs}", nn.Parameter(torch.zeros(m.out_channels, device=dev)))
                self.ops.append(("conv", convs, m.stride, m.padding))
                convs += 1
            elif isinstance(m, nn.ReLU):
                self.ops.append(("relu",))
            elif isinstance(m, nn.MaxPool2d):
                self.ops.append(("pool", m.kernel_size))
            elif isinstance(m, nn.Flatten):
                self.ops.append(("flatten",))
            else:
                raise ValueError(f"SSNet supports Conv2d, ReLU, MaxPool2d and Flatten layers, not {type(m).__name__}")
        if convs == 0:
            raise ValueError("SSNet needs a feature extractor with at least one Conv2d to scale and shift")
        self.convs = convs
        self.register_buffer("feature_scale", torch.ones((), device=self.w0.device))
        with torch.no_grad():
            dim = self.features(torch.zeros(1, 1, 8, 8, device=self.w0.device)).shape[1]
            if calibration is not None:   # features of mean norm 1 on these images: one β for any backbone
                self.feature_scale.fill_(1.0 / self.features(calibration).norm(dim=1).mean().clamp_min(1e-6))
        with torch.random.fork_rng(devices=[]):      # the head is zeroed: leave the global RNG alone
            self.head = nn.Linear(dim, int(n_way)).to(self.w0.device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, 1, 8, 8)
        for op in self.ops:
            if op[0] == "conv":
                i = op[1]
                w = getattr(self, f"w{i}") * getattr(self, f"scale{i}")[:, None, None, None]  # W ⊙ Φ_S1
                h = F.conv2d(h, w, getattr(self, f"b{i}") + getattr(self, f"shift{i}"), op[2], op[3])
            elif op[0] == "relu":
                h = F.relu(h)
            elif op[0] == "pool":
                h = F.max_pool2d(h, op[1])
            else:
                h = h.flatten(1)
        return h * self.feature_scale

    def forward(self, x: torch.Tensor, features_only: bool = False) -> torch.Tensor:
        f = self.features(x)
        return f if features_only else self.head(f)

    def ss(self) -> dict[str, torch.Tensor]:
        """Φ_S1 and Φ_S2 of every convolution, on the CPU (for plots): ``scale0``, ``shift0``, ..."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if not n.startswith("head")}


@dataclass
class MTLResult:
    """``model``: the meta-trained :class:`SSNet`; ``start``: the same pretrained network before
    meta-training (Φ_S1 = 1, Φ_S2 = 0); ``names``: the parameters the inner loop adapts (evaluate
    with :func:`adaptation`, or ``maml.adaptation(..., names=names, lr=config.inner_lr)``: the same numbers);
    ``losses`` [iterations]: meta-loss per outer step; ``hard`` [iterations]: which steps were
    hard-task batches; ``pretrain_accuracy``: phase 1's accuracy on its own 40 classes (held-out
    images when given)."""

    model: SSNet
    start: SSNet
    names: list[str]
    losses: torch.Tensor
    hard: torch.Tensor
    pretrain_accuracy: float
    pretrain_seconds: float
    seconds: float
    config: MTLConfig = field(default_factory=MTLConfig)


def pretrain(pool: torch.Tensor, config: MTLConfig, channels: int = 32, seed: int = 0,
             generator: torch.Generator | None = None, held_out: torch.Tensor | None = None):
    """Phase 1: a :func:`lfmlab.meta.nets.classifier` over all C classes of ``pool`` [C, M, 1, 8, 8],
    trained with Adam on random mini-batches. Returns (network, accuracy, seconds); the accuracy
    is on ``held_out`` [C, M', ...] when given, else on ``pool``."""
    c, m = pool.shape[:2]
    net = nets.classifier(channels, c, seed=seed, device=pool.device).train()
    x, y = pool.flatten(0, 1), torch.arange(c, device=pool.device).repeat_interleave(m)
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    opt = torch.optim.Adam(net.parameters(), lr=config.pretrain_lr)
    start = time.perf_counter()
    for _ in progress(range(config.pretrain_steps), desc="MTL pretraining"):
        rows = torch.randint(len(y), (config.pretrain_batch,), generator=generator, device=gen_dev).to(y.device)
        loss = F.cross_entropy(net(x[rows]), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    ev = held_out if held_out is not None else pool
    with torch.no_grad():
        ey = torch.arange(ev.shape[0], device=ev.device).repeat_interleave(ev.shape[1])
        acc = float((net(ev.flatten(0, 1)).argmax(-1) == ey).float().mean())
    return net, acc, time.perf_counter() - start


def _fit_head(w: torch.Tensor, b: torch.Tensor, f: torch.Tensor, y: torch.Tensor, steps: int, lr: float):
    """Eq. 4 on fixed features f [S, F]: ``steps`` SGD steps on the head (w [n, F], b [n])."""
    def support_loss(w, b):
        return cross_entropy(f @ w.T + b, y)

    for _ in range(steps):
        gw, gb = grad(support_loss, argnums=(0, 1))(w, b)
        w, b = w - lr * gw, b - lr * gb
    return w, b


def meta_gradient(model: SSNet, params: maml.Params, tasks, config: MTLConfig) -> tuple[torch.Tensor, maml.Params]:
    """Eqs. 4-5 for a batch of tasks, vmapped: the meta-loss and its exact gradient for every parameter.

    The same numbers as ``maml.meta_gradient(model, params, tasks, cross_entropy, steps, lr, names=HEAD)``
    (tested), but the features, which the inner loop does not change, are computed once per task
    instead of once per inner step."""
    sx, sy, qx, qy = tasks

    def per_task(p, sx, sy, qx, qy):
        fs = functional_call(model, p, (sx,), {"features_only": True})
        fq = functional_call(model, p, (qx,), {"features_only": True})
        w, b = _fit_head(p["head.weight"], p["head.bias"], fs, sy, config.inner_steps, config.inner_lr)
        return cross_entropy(fq @ w.T + b, qy)

    def meta_loss(p):
        return vmap(per_task, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean()

    g, value = grad_and_value(meta_loss)(params)
    return value, g


def _features(model: SSNet, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The features of images x [T, S, 1, 8, 8] -> [T, S, F], a chunk of images at a time (the
    convolutions' activations of 600 episodes at once would take about 0.8 GB)."""
    flat = x.flatten(0, 1)
    out = torch.cat([model(flat[i:i + chunk], features_only=True) for i in range(0, len(flat), chunk)])
    return out.view(*x.shape[:2], -1)


def adaptation(model: SSNet, tasks, steps: int = 5, lr: float | None = None) -> maml.Adaptation:
    """Meta-test: fit the head on each task's support set and record the query loss and accuracy
    after 0..``steps`` steps, [steps + 1, T]; the same numbers as ``maml.adaptation(model, tasks,
    cross_entropy, steps, lr, names=HEAD, metric=accuracy)`` (tested), with the frozen features
    computed once. ``lr`` defaults to :class:`MTLConfig`'s β (4, for features of mean norm 1)."""
    lr = MTLConfig.inner_lr if lr is None else lr
    sx, sy, qx, qy = tasks
    w0, b0 = model.head.weight.detach(), model.head.bias.detach()

    def one(fs, sy, fq, qy):
        w, b, losses, accs = w0, b0, [], []
        for s in range(steps + 1):
            logits = fq @ w.T + b
            losses.append(cross_entropy(logits, qy))
            accs.append(accuracy(logits, qy))
            if s < steps:
                w, b = _fit_head(w, b, fs, sy, 1, lr)
        return torch.stack(losses), torch.stack(accs)

    with torch.no_grad():
        fs, fq = _features(model, sx), _features(model, qx)
        loss, acc = vmap(one)(fs, sy, fq, qy)                          # [T, steps + 1]
    return maml.Adaptation(loss.T.contiguous(), acc.T.contiguous())


def failure_classes(model: SSNet, tasks: pools.Episodes, config: MTLConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """The pool class each task fails most on after the inner loop (HT meta-batch): [T'] for the T' ≤ T
    tasks not solved perfectly; ties between labels are broken at random."""
    sx, sy, qx, qy = tasks
    w0, b0 = model.head.weight.detach(), model.head.bias.detach()

    def one(fs, sy, fq, qy):
        w, b = _fit_head(w0, b0, fs, sy, config.inner_steps, config.inner_lr)
        hit = ((fq @ w.T + b).argmax(-1) == qy).float()
        return torch.zeros(config.n_way, device=hit.device).index_add(0, qy, hit)

    with torch.no_grad():
        per_label = vmap(one)(_features(model, sx), sy, _features(model, qx), qy)   # [T, n_way]
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    jitter = torch.rand(per_label.shape, generator=generator, device=gen_dev).to(per_label.device) * 0.5
    worst = (per_label + jitter).argmin(1)          # counts are whole numbers: the jitter only breaks ties
    imperfect = per_label.min(1).values < config.n_query
    return tasks.classes.gather(1, worst[:, None]).squeeze(1)[imperfect]


def halves(pool: torch.Tensor, config: MTLConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool [C, M, 1, 8, 8] split along its images: (first half: pretraining, second half: episodes)."""
    cfg = config or MTLConfig()
    if not isinstance(pool, torch.Tensor) or pool.dim() != 5 or tuple(pool.shape[2:]) != (1, 8, 8):
        raise ValueError("MTL needs a pool of classes [C, M, 1, 8, 8] (lfmlab.meta.pools.augmented_pool), got "
                         f"{tuple(pool.shape) if isinstance(pool, torch.Tensor) else type(pool).__name__}")
    c, m = pool.shape[:2]
    if m < 2 * (cfg.k_shot + cfg.n_query) or c < cfg.n_way:
        raise ValueError(f"MTL needs ≥ {cfg.n_way} classes with ≥ {2 * (cfg.k_shot + cfg.n_query)} images each "
                         f"(half pretrains, half makes episodes of {cfg.k_shot} + {cfg.n_query}); the pool is "
                         f"[{c}, {m}, ...]: lower k_shot or n_query")
    validate.finite("the pool's images", pool)
    return pool[:, :m // 2], pool[:, m // 2:]


def meta_train(start: SSNet, pool: torch.Tensor, config: MTLConfig | None = None,
               generator: torch.Generator | None = None) -> MTLResult:
    """Phase 2 on episodes of ``pool`` [C, M, 1, 8, 8]: meta-learn the SS weights of a copy of ``start``
    (eqs. 4-5), with HT batches when ``config.hard_tasks``. ``start`` is unchanged."""
    cfg = config or MTLConfig()
    model = copy.deepcopy(start)
    params = maml.params_of(model)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if n not in HEAD], lr=cfg.outer_lr)
    losses = torch.zeros(cfg.iterations)
    hard = torch.zeros(cfg.iterations, dtype=torch.bool)
    failed: torch.Tensor | None = None
    t0 = time.perf_counter()
    for it in progress(range(cfg.iterations), desc="MTL (HT)" if cfg.hard_tasks else "MTL"):
        use_hard = cfg.hard_tasks and failed is not None and it % 2 == 1
        if use_hard:
            classes = failed.unique()
            tasks = pools.episodes(pool[classes], cfg.n_way, cfg.k_shot, cfg.n_query, cfg.meta_batch, generator)
            tasks = dataclasses.replace(tasks, classes=classes[tasks.classes])   # back to pool classes
        else:
            tasks = pools.episodes(pool, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.meta_batch, generator)
        value, g = meta_gradient(model, params, tasks, cfg)
        for n, p in model.named_parameters():
            p.grad = None if n in HEAD else g[n]      # θ's initialisation stays at zero (see the module)
        opt.step()
        losses[it], hard[it] = float(value), use_hard
        if cfg.hard_tasks and not use_hard:
            f = failure_classes(model, tasks, cfg, generator)
            failed = f if f.unique().numel() >= cfg.n_way else None
    validate.model_finite("MTL's scaling and shifting", model)
    return MTLResult(model.eval(), start, list(HEAD), losses, hard, float("nan"), 0.0,
                     time.perf_counter() - t0, cfg)


def mtl(pool: torch.Tensor, config: MTLConfig | None = None, channels: int = 32, seed: int = 0,
        generator: torch.Generator | None = None, held_out: torch.Tensor | None = None) -> MTLResult:
    """Meta-transfer learning on a pool of classes [C, M, 1, 8, 8]: phase 1 (:func:`pretrain`) on the
    first half of each class's images, phase 2 (:func:`meta_train`) on episodes of the second half.
    ``pretrain_steps=0`` and ``iterations=0`` give the null: an untrained backbone, Φ_S1 = 1,
    Φ_S2 = 0, the same head-only inner loop."""
    cfg = config or MTLConfig()
    validate.number("channels", channels, 1, 512, integer=True, fix="the backbone's width, e.g. 32")
    pre_pool, meta_pool = halves(pool, cfg)
    net, pre_acc, pre_s = pretrain(pre_pool, cfg, channels, seed, generator, held_out)
    start = SSNet(net.features, cfg.n_way, pre_pool.flatten(0, 1)).eval()
    out = meta_train(start, meta_pool, cfg, generator)
    return dataclasses.replace(out, pretrain_accuracy=pre_acc, pretrain_seconds=pre_s)
