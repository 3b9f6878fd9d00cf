"""In-context learning as meta-learning: a transformer trained on sequences of (x, y) pairs from
random tasks learns to regress a *new* task from the pairs in its context, with no weight update
(Garg, Tsipras, Liang & Valiant, "What Can Transformers Learn In-Context? A Case Study of Simple
Function Classes", NeurIPS 2022; the meta-learning view: Hochreiter, Younger & Conwell 2001,
Kirsch et al. 2022; survey §5).

MAML meta-learns an *initialisation* and adapts it by gradient steps on the support set. Here the
whole learning algorithm lives in the forward pass. A sequence holds n points of one task f,
(x_1, f(x_1), …, x_n, f(x_n)); a causal transformer M_θ predicts each y_i from the prefix before it.
The meta-training objective is (eq. 1 of Garg et al.)

$$\\min_θ \\; \\mathbb{E}_{f,\\,x_{1:n}} \\Big[\\frac{1}{n}\\sum_{i=1}^{n}
  \\ell\\big(M_θ(x_1, f(x_1), …, x_{i-1}, f(x_{i-1}), x_i),\\; f(x_i)\\big)\\Big],$$

so one sequence trains every context length 0 … n − 1 at once. At test time the prediction after
k examples is M_θ(x_1, y_1, …, x_k, y_k, x_query): the *k-shot learner* is the forward pass.

Tokens: each x_i and each y_i is one token, embedded linearly from (x, y, is-x) with a learned
position embedding; the prediction for y_i is read at x_i's token. Pre-norm encoder layers with a
causal mask, no dropout.

Simplifications: the tasks are the sinusoids of :mod:`lfmlab.meta.sinusoid` (Garg et al. use
linear functions, sparse linear functions, trees and small networks); no curriculum on the
dimension; a 3-layer, 64-wide model instead of GPT-2's 12 layers.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab import runtime, validate
from lfmlab.core.params import device_of
from lfmlab.core.schedules import cosine
from lfmlab.meta import sinusoid
from lfmlab.progress import progress

__all__ = ["ICLTransformer", "ICLConfig", "ICLResult", "model", "meta_train", "predict", "curve"]


class ICLTransformer(nn.Module):
    """A causal transformer over interleaved (x, y) tokens; ``forward(x, y)`` [B, n, 1] each ->
    the prediction of every y_i from the prefix (x_1, y_1, …, x_i) [B, n, 1]."""

    def __init__(self, max_points: int = 20, width: int = 64, layers: int = 3, heads: int = 4):
        super().__init__()
        self.max_points = int(max_points)
        self.embed = nn.Linear(3, width)
        self.position = nn.Embedding(2 * self.max_points, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        if n > self.max_points:
            raise ValueError(f"this model reads at most {self.max_points} points in context, got {n}")
        zeros, ones = torch.zeros_like(x), torch.ones_like(x)
        xs = torch.cat([x, zeros, ones], -1)                          # x tokens: (x, 0, 1)
        ys = torch.cat([zeros, y, zeros], -1)                         # y tokens: (0, y, 0)
        tokens = torch.stack([xs, ys], 2).reshape(b, 2 * n, 3)        # x_1, y_1, x_2, y_2, ...
        h = self.embed(tokens) + self.position.weight[: 2 * n]
        mask = nn.Transformer.generate_square_subsequent_mask(2 * n, device=x.device, dtype=h.dtype)
        h = self.encoder(h, mask=mask, is_causal=True)
        return self.head(self.norm(h[:, 0::2]))                       # read at the x tokens


def model(max_points: int = 20, width: int = 64, layers: int = 3, heads: int = 4, seed: int | None = None,
          device: str | torch.device | None = None) -> ICLTransformer:
    """A fresh :class:`ICLTransformer` on ``device``; with ``seed``, the global RNG is left alone."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        return ICLTransformer(max_points, width, layers, heads).to(runtime.device(device))


@dataclass
class ICLConfig:
    """Meta-training: Adam on ``steps`` batches of ``tasks`` sequences of ``points`` points each."""

    steps: int = 3000
    tasks: int = 64            # sequences (tasks) per step
    points: int = 20           # (x, y) pairs per sequence: context lengths 0 .. points - 1
    lr: float = 1e-3
    warmup: int = 100          # linear warm-up steps, then cosine to 0 (core.schedules.cosine)


@dataclass
class ICLResult:
    """The meta-trained transformer (a new module), its loss per step [steps] and the seconds."""

    model: ICLTransformer
    losses: torch.Tensor
    config: ICLConfig
    seconds: float


def meta_train(net: ICLTransformer, config: ICLConfig | None = None, generator: torch.Generator | None = None,
               desc: str = "ICL") -> ICLResult:
    """Garg et al.'s objective on sinusoid tasks: every prefix of every sequence is a training example.
    ``net`` is copied, never changed."""
    cfg = config or ICLConfig()
    validate.number("steps", cfg.steps, 0, fix="The number of training steps, e.g. 3000.")
    if cfg.points > net.max_points:
        raise ValueError(f"points = {cfg.points} exceeds the model's context of {net.max_points} points")
    net = copy.deepcopy(net).train()
    dev = device_of(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = cosine(opt, max(cfg.steps, 1), warmup=min(cfg.warmup, max(cfg.steps - 1, 0)))
    losses = torch.zeros(cfg.steps, device=dev)
    start = time.perf_counter()
    for step in progress(range(cfg.steps), desc=desc):
        t = sinusoid.sample(cfg.tasks, cfg.points, 1, generator, dev)
        pred = net(t.support_x, t.support_y)
        loss = ((pred - t.support_y) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses[step] = loss.detach()
    return ICLResult(net.eval(), losses.cpu(), cfg, time.perf_counter() - start)


def predict(net: ICLTransformer, context_x: torch.Tensor, context_y: torch.Tensor, query_x: torch.Tensor,
            chunk: int = 4096) -> torch.Tensor:
    """The prediction at each query point from k context pairs, with no weight update.

    context_x, context_y [T, k, 1] (k may be 0), query_x [T, Q, 1] -> [T, Q, 1]. Each query point is
    read on its own (k context pairs, then the query's x), so queries never see each other; the
    T·Q sequences run in batches of ``chunk``.
    """
    t, q = query_x.shape[:2]
    k = context_x.shape[1]
    cx = context_x.unsqueeze(1).expand(t, q, k, 1).reshape(t * q, k, 1)
    cy = context_y.unsqueeze(1).expand(t, q, k, 1).reshape(t * q, k, 1)
    qx = query_x.reshape(t * q, 1, 1)
    xs, ys = torch.cat([cx, qx], 1), torch.cat([cy, torch.zeros_like(qx)], 1)
    with torch.no_grad():
        out = torch.cat([net(xs[i:i + chunk], ys[i:i + chunk])[:, -1] for i in range(0, t * q, chunk)])
    return out.reshape(t, q, 1)


def curve(net: ICLTransformer, tasks: sinusoid.SineTasks, ks: Sequence[int]) -> torch.Tensor:
    """Query MSE per task after k in-context examples (the first k support points), for each k in
    ``ks``: [len(ks), T]. The same protocol as :func:`lfmlab.meta.maml.adaptation` on the same tasks."""
    sx, sy, qx, qy = tasks
    out = []
    for k in ks:
        if not 0 <= int(k) <= sx.shape[1] or int(k) >= net.max_points:
            raise ValueError(f"k = {k}: between 0 and {min(sx.shape[1], net.max_points - 1)} context points")
        pred = predict(net, sx[:, : int(k)], sy[:, : int(k)], qx)
        out.append(((pred - qy) ** 2).mean((1, 2)))
    return torch.stack(out)
