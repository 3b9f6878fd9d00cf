"""Prototypical Networks: few-shot classification by distance to class means in a learned embedding.

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017. The
metric-based family of survey §5.2 (its [191], Relation Networks, learns the distance too;
ProtoNets fix it to the squared Euclidean distance, Snell eq. 1-2):

    c_k = (1/|S_k|) Σ_{(x, y) ∈ S, y = k} f_φ(x)                  # prototype of class k
    p(y = k | x) = softmax_k( -||f_φ(x) - c_k||² )                  # query prediction

f_φ is trained *episodically*: each step samples few-shot episodes from the meta-train classes
and minimises the query cross-entropy, so the embedding learns what makes few-shot
classification work rather than any fixed set of classes. Adapting to a new task costs one
forward pass: there is no inner loop. With f = identity on the pixels this is the
**nearest-centroid baseline** (:func:`nearest_centroid`).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.params import device_of, evaluating
from lfmlab.meta.common import Tasks, as_tasks
from lfmlab.meta.maml import Sampler
from lfmlab.meta.nets import ConvEmbedding, embedding  # noqa: F401  (re-exported)
from lfmlab.progress import progress


def prototypes(support: torch.Tensor, support_y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class means c_k (Snell eq. 1): support embeddings [E, S, D], labels [E, S] -> [E, n_way, D]."""
    onehot = F.one_hot(support_y, n_way).to(support.dtype)                     # [E, S, n_way]
    return onehot.transpose(1, 2) @ support / onehot.sum(1).clamp_min(1)[..., None]


def logits(embed: nn.Module, tasks: Tasks, n_way: int | None = None) -> torch.Tensor:
    """-||f(x_q) - c_k||² (Snell eq. 2) for every query of every episode: [E, Q, n_way]."""
    sx, sy, qx, _ = as_tasks(tasks)
    n_way = int(sy.max()) + 1 if n_way is None else n_way
    e, s, q = sx.shape[0], sx.shape[1], qx.shape[1]
    z = embed(torch.cat([sx.flatten(0, 1), qx.flatten(0, 1)]))                  # one pass: [E (S + Q), D]
    zs, zq = z[:e * s].view(e, s, -1), z[e * s:].view(e, q, -1)
    return -torch.cdist(zq, prototypes(zs, sy, n_way)).pow(2)


@torch.no_grad()
def evaluate(embed: nn.Module, tasks: Tasks, chunk: int = 200) -> torch.Tensor:
    """Query accuracy per episode [E] (eval mode, restored). ``tasks`` are e.g. meta-test episodes."""
    sx, sy, qx, qy = as_tasks(tasks)
    with evaluating(embed):
        n_way = int(sy.max()) + 1
        out = [(logits(embed, (sx[i:i + chunk], sy[i:i + chunk], qx[i:i + chunk], None), n_way).argmax(-1)
                == qy[i:i + chunk]).float().mean(1) for i in range(0, sx.shape[0], chunk)]
        return torch.cat(out)


def nearest_centroid(tasks: Tasks) -> torch.Tensor:
    """The pixel baseline: ProtoNet with f = identity (the class mean of raw pixels). Accuracy per episode [E]."""
    return evaluate(nn.Flatten(), tasks)


@dataclass
class ProtoConfig:
    """Episodic training (Snell et al. §2.2): ``iterations`` Adam steps on ``meta_batch`` episodes each."""

    iterations: int = 500
    meta_batch: int = 16
    lr: float = 1e-3


@dataclass
class ProtoResult:
    """The trained embedding ``model``, the query loss per step ``losses`` [iterations], wall time."""

    model: nn.Module
    losses: torch.Tensor
    config: ProtoConfig
    seconds: float


def train(embed: nn.Module, sample: Sampler, config: ProtoConfig | None = None,
          generator: torch.Generator | None = None) -> ProtoResult:
    """Train a copy of ``embed`` episodically on tasks from ``sample(n, generator)``; ``embed`` is not changed."""
    config = config or ProtoConfig()
    embed = copy.deepcopy(embed).train()
    opt = torch.optim.Adam(embed.parameters(), lr=config.lr)
    losses = torch.zeros(config.iterations, device=device_of(embed))
    start = time.perf_counter()
    for it in progress(range(config.iterations), desc="protonet"):
        tasks = sample(config.meta_batch, generator)
        _, sy, _, qy = as_tasks(tasks)
        out = logits(embed, tasks)                                              # [E, Q, n_way]
        loss = F.cross_entropy(out.flatten(0, 1), qy.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[it] = loss.detach()
    return ProtoResult(embed.eval(), losses.cpu(), config, time.perf_counter() - start)
