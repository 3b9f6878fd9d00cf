"""Meta-transfer learning (Sun, Liu, Chua & Schiele, "Meta-Transfer Learning for Few-Shot
Learning", CVPR 2019; survey §5.1, white-box learning from a pretrained model).

MAML meta-learns every weight of a network that starts from scratch. MTL starts from a network
**pretrained** by ordinary classification on the meta-train classes, freezes its weights Θ, and
meta-learns only a light *scaling and shifting* (SS) of each of its neurons, plus the classifier
θ that the inner loop fine-tunes. For a layer with frozen W, b (eq. 6 of the paper):

$$\\mathrm{SS}(X;\\, W, b;\\, Φ_{S_1}, Φ_{S_2}) = (W \\odot Φ_{S_1})\\,X + (b + Φ_{S_2}),$$

with Φ_{S_1} (one scale per output neuron, initialised to 1) and Φ_{S_2} (one shift, initialised
to 0). Inner loop, the classifier only (eq. 3): θ' = θ − β ∇_θ L_{T^{(tr)}}([Θ; θ], Φ_S); outer
loop (eqs. 4–5): Φ_S ← Φ_S − γ ∇_{Φ_S} L_{T^{(te)}}([Θ; θ'], Φ_S) and θ ← θ − γ ∇_θ
L_{T^{(te)}}([Θ; θ'], Φ_S), exact through the inner loop (:func:`lfmlab.meta.maml.meta_gradient`
with the head's names, as ANIL).

**Hard-task meta-batch** (HT): after each meta-batch the class each task got *most wrong* on its
query set is remembered; the next outer step is taken on tasks re-sampled from those failure
classes ("online hard task mining").

Simplifications: an MLP (``digits-backbone``, 64-128-128, pretrained on digits 0-4 upright, the
meta-train digits) instead of a ResNet-12; the SS of a linear layer scales each output neuron's
weight row (the paper scales each convolution filter); Adam instead of SGD for the outer loop;
one hard meta-batch after every ordinary one.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from lfmlab import validate
from lfmlab.meta import maml, pools
from lfmlab.meta.common import cross_entropy
from lfmlab.progress import progress

__all__ = ["SSNet", "MTLConfig", "MTLResult", "wrap", "meta_train", "failure_classes"]


class SSNet(nn.Module):
    """A frozen MLP trunk (its Linear layers' weights kept as *buffers*) with SS parameters per
    neuron and a new linear classifier ``head``. Parameters: ``scale_i``, ``shift_i``, ``head.*``."""

    def __init__(self, trunk: nn.Sequential, n_way: int):
        super().__init__()
        self.kinds: list[str] = []
        width = None
        n = 0
        for m in trunk:
            if isinstance(m, nn.Linear):
                self.register_buffer(f"weight_{n}", m.weight.detach().clone())
                self.register_buffer(f"bias_{n}", m.bias.detach().clone())
                self.register_parameter(f"scale_{n}", nn.Parameter(torch.ones(m.out_features, device=m.weight.device)))
                self.register_parameter(f"shift_{n}", nn.Parameter(torch.zeros(m.out_features, device=m.weight.device)))
                self.kinds.append("linear")
                width, n = m.out_features, n + 1
            elif isinstance(m, nn.ReLU):
                self.kinds.append("relu")
            else:
                raise ValueError(f"SSNet wraps Linear and ReLU layers only, found {type(m).__name__}")
        if width is None:
            raise ValueError("the trunk has no Linear layer to scale and shift")
        self.head = nn.Linear(width, int(n_way)).to(self.weight_0.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, n = x.flatten(1), 0
        for kind in self.kinds:
            if kind == "relu":
                h = torch.relu(h)
                continue
            w, b = getattr(self, f"weight_{n}"), getattr(self, f"bias_{n}")
            h = F.linear(h, w * getattr(self, f"scale_{n}")[:, None], b + getattr(self, f"shift_{n}"))
            n += 1
        return self.head(h)


def wrap(pretrained: nn.Module, n_way: int = 5, seed: int | None = None) -> SSNet:
    """An :class:`SSNet` on a copy of ``pretrained.features`` (unchanged), SS at identity, a fresh head."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        return SSNet(copy.deepcopy(pretrained.features), n_way)


@dataclass
class MTLConfig:
    """Meta-training: as :class:`lfmlab.meta.maml.MAMLConfig`, plus hard-task mining."""

    iterations: int = 400        # outer steps on ordinary meta-batches (each followed by a hard one)
    meta_batch: int = 16
    inner_steps: int = 5
    inner_lr: float = 0.4        # β
    outer_lr: float = 1e-3       # γ (Adam)
    hard_tasks: bool = True      # HT meta-batch
    k_shot: int = 1
    n_way: int = 5
    n_query: int = 15


@dataclass
class MTLResult:
    """The meta-trained :class:`SSNet` (a new module), its meta-loss per outer step, the number of
    hard meta-batches taken, the adapted parameters' names, the seconds."""

    model: SSNet
    losses: torch.Tensor
    hard_batches: int
    names: list[str]
    seconds: float


def failure_classes(model: nn.Module, episodes, steps: int, lr: float, names: list[str]) -> torch.Tensor:
    """For each episode, the pool class with the lowest query accuracy after the inner loop: [E]."""
    params = maml.params_of(model)
    n_way = int(episodes.classes.shape[1])

    def one(sx, sy, qx, qy):
        fast = maml.adapt(model, params, sx, sy, cross_entropy, steps, lr, names)
        hit = (functional_call(model, fast, (qx,)).argmax(-1) == qy).float()
        return torch.stack([hit[qy == c].mean() for c in range(n_way)])

    with torch.no_grad():
        per_class = vmap(one)(episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)
    worst = per_class.argmin(1)                                                  # [E]
    return episodes.classes.gather(1, worst[:, None]).squeeze(1)


def meta_train(net: SSNet, pool: torch.Tensor, config: MTLConfig | None = None,
               generator: torch.Generator | None = None) -> MTLResult:
    """Meta-transfer learning on episodes from ``pool`` [C, M, ...] (see the module). ``net`` is copied."""
    cfg = config or MTLConfig()
    validate.number("iterations", cfg.iterations, 0, fix="The number of outer steps, e.g. 400.")
    net = copy.deepcopy(net)
    names = [n for n, _ in net.named_parameters() if n.startswith("head.")]
    params = maml.params_of(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    losses, hard = [], 0

    def step(tasks) -> None:
        value, g = maml.meta_gradient(net, params, tasks, cross_entropy, cfg.inner_steps, cfg.inner_lr, names)
        for n, p in net.named_parameters():
            p.grad = g[n]
        opt.step()
        losses.append(value.detach())

    start = time.perf_counter()
    for _ in progress(range(cfg.iterations), desc="MTL"):
        eps = pools.episodes(pool, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.meta_batch, generator)
        step(eps)
        if cfg.hard_tasks:
            failed = torch.unique(failure_classes(net, eps, cfg.inner_steps, cfg.inner_lr, names))
            if len(failed) >= cfg.n_way:                  # hard tasks: re-sampled from the failure classes
                step(pools.episodes(pool[failed], cfg.n_way, cfg.k_shot, cfg.n_query, cfg.meta_batch, generator))
                hard += 1
    return MTLResult(net.eval(), torch.stack(losses).cpu() if losses else torch.zeros(0), hard, names,
                     time.perf_counter() - start)
