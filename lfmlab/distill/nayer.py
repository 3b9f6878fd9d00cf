"""NAYER: a generator fed by the classes' *names*, with a noisy layer re-drawn every round.

Tran et al., "NAYER: Noisy Layer Data Generation for Efficient and Effective Data-free
Knowledge Distillation", CVPR 2024 (survey §3.2, the generative family of DAFL and Fast-DFKD).
Generators that take random noise z must learn, from scratch and in every batch, which part of
z means which class. NAYER gives the generator a **constant, meaningful input** instead: the
label-text embedding (LTE) e_y of the class name from a pretrained language model (here the
shipped MiniLM, of "a handwritten digit seven"), and gets its diversity from a **noisy layer**
NL, a linear map re-initialised from N(0, 1) at the start of every round:

.. math::  \\hat x = G_\\theta\\big(\\mathrm{NL}_r(\\mathrm{BN}(e_y))\\big), \\qquad
           \\min_{\\theta,\\,\\mathrm{NL}_r}\\; \\mathrm{CE}(T(\\hat x), y) + \\alpha_{bn} R_{BN}(\\hat x)
           + \\alpha_{tv} R_{TV}(\\hat x) + \\alpha_{l2}\\,\\|\\hat x\\|^2

Each round re-draws NL, takes ``g_steps`` Adam steps on G and NL together, and adds the batch
with the lowest loss to the bank; G itself persists across rounds (re-initialised every
``g_life`` rounds), so later rounds start from a generator that already maps class names to
digit-like images and need only a few steps: that is where the teacher passes are saved. As in
the reference code, a batch is split into chunks of ``chunk`` images, each with its own noisy
layer, so one class gets different images within a round.

The loss is DeepInversion's (eq. 1, 3, 4; :func:`lfmlab.distill.common.synthesis_loss`) with its
weights, so the comparison with DeepInversion isolates the generator; the student is then
distilled on the bank by :func:`lfmlab.distill.kd.distill`, as on DeepInversion's pool.

Simplifications, stated: no adversarial (student-teacher disagreement) term and no warm-up
loops; every round is synthesised before the student's KD starts (the reference interleaves a
round of synthesis with epochs of student training); one text template per class; the teacher
sees the images without augmentation (the reference crops and flips them).

>>> r = nayer(teacher, student, NAYERConfig(rounds=10), test=(d.test.x, d.test.y))
>>> r.history["teacher image passes"], r.accuracy
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from lfmlab.core.params import device_of, frozen
from lfmlab.distill.common import Callback, DistillResult, Generator, WeightedConfig, Weights, synthesis_loss
from lfmlab.distill.kd import KDConfig, distill
from lfmlab.progress import progress

__all__ = ["NAYERConfig", "NoisyLayerGenerator", "class_text_embeddings", "synthesise_bank", "nayer",
           "WEIGHTS", "DIGIT_TEXTS"]

WEIGHTS = Weights(ce=1.0, bn=0.1, tv=0.05, l2=0.001)     # DeepInversion's (deepinversion.WEIGHTS)
TERMS = ("ce", "bn", "tv", "l2")
DIGIT_TEXTS = tuple(f"a handwritten digit {w}" for w in
                    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))


@dataclass
class NAYERConfig(WeightedConfig):
    """``rounds`` rounds of ``per_round`` images, ``g_steps`` generator steps each."""

    rounds: int = 10
    per_round: int = 40           # images per round, classes in turn (0, 1, ..., 9, 0, ...)
    chunk: int = 10               # images per noisy layer (the reference's nl)
    g_steps: int = 10             # generator steps per round: one teacher pass of the batch each
    g_life: int = 10              # rounds before the generator is re-initialised
    lr: float = 0.01              # Adam on the generator and the noisy layers
    z_dim: int = 32               # the noisy layer's output (the generator's input)
    width: int = 16
    n_classes: int = 10
    texts: tuple[str, ...] = DIGIT_TEXTS
    weights: Weights = field(default_factory=lambda: copy.copy(WEIGHTS))
    kd: KDConfig = field(default_factory=lambda: KDConfig(steps=1000, jitter=1))

    def __post_init__(self):
        from lfmlab import validate

        for name in ("rounds", "per_round", "chunk", "g_steps", "g_life", "z_dim", "width", "n_classes"):
            validate.number(name, getattr(self, name), 1, integer=True, fix=f"{name} is a count, at least 1.")
        validate.number("lr", self.lr, 0.0, fix="the generator's learning rate, ≥ 0 (0: an untrained generator).")
        if len(self.texts) != self.n_classes:
            raise ValueError(f"texts needs one class name per class: {len(self.texts)} texts for "
                             f"{self.n_classes} classes")


class NoisyLayerGenerator(nn.Module):
    """LTE [C, D] (a buffer) -> BN1d -> a noisy Linear(D, z_dim) per chunk of the batch -> the
    generator of DAFL/Fast (:class:`lfmlab.distill.common.Generator`) -> images [N, 1, 8, 8]."""

    def __init__(self, text_embeddings: torch.Tensor, n_chunks: int, chunk: int, z_dim: int = 32, width: int = 16):
        super().__init__()
        self.register_buffer("label_emb", text_embeddings.detach().float().clone())
        d = self.label_emb.shape[1]
        self.chunk = int(chunk)
        self.norm = nn.BatchNorm1d(d)
        self.noisy = nn.ModuleList(nn.Linear(d, z_dim) for _ in range(n_chunks))
        self.body = Generator(z_dim, width)

    @torch.no_grad()
    def redraw_noise(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every noisy layer: weights ~ N(0, 1), biases 0 (the reference's re_init_le)."""
        for layer in self.noisy:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.zero_()

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        le = self.norm(self.label_emb[targets])
        pieces = le.split(self.chunk)
        if len(pieces) > len(self.noisy):
            raise ValueError(f"{len(targets)} images need {len(pieces)} noisy layers of {self.chunk}; "
                             f"this generator has {len(self.noisy)}")
        z = torch.cat([layer(p) for layer, p in zip(self.noisy, pieces)])
        return self.body(z)


def class_text_embeddings(texts: tuple[str, ...] | list[str], device: torch.device | str | None = None) -> torch.Tensor:
    """MiniLM sentence embeddings [C, 384] of the class names (the shipped encoder; nothing downloads;
    computed once per list of names)."""
    return _embeddings(tuple(texts)).to(device or "cpu", copy=True)   # the cached tensor stays untouched


@functools.lru_cache(maxsize=8)
@torch.no_grad()
def _embeddings(texts: tuple[str, ...]) -> torch.Tensor:
    from lfmlab.zoo import minilm

    model, tokenizer, _ = minilm.load()
    return minilm.embed(model, tokenizer, list(texts), device=torch.device("cpu"))


def synthesise_bank(teacher: nn.Module, config: NAYERConfig | None = None, generator: torch.Generator | None = None,
                    text_embeddings: torch.Tensor | None = None, callback: Callback | None = None,
                    show: bool = True) -> tuple[torch.Tensor, torch.Tensor, float, nn.Module, dict[str, torch.Tensor]]:
    """NAYER's synthesis (module docstring). Returns (images [R B, 1, 8, 8], targets [R B],
    seconds, the generator (eval mode), history: best loss per round and the teacher image passes)."""
    cfg = config or NAYERConfig()
    dev = device_of(teacher)
    e = (text_embeddings if text_embeddings is not None else class_text_embeddings(cfg.texts)).to(dev)
    if e.shape[0] != cfg.n_classes:
        raise ValueError(f"text_embeddings has {e.shape[0]} rows for {cfg.n_classes} classes")
    n_chunks = -(-cfg.per_round // cfg.chunk)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    y = torch.arange(cfg.n_classes, device=dev).repeat(-(-cfg.per_round // cfg.n_classes))[:cfg.per_round]

    def fresh(r: int) -> NoisyLayerGenerator:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + r)
            return NoisyLayerGenerator(e, n_chunks, cfg.chunk, cfg.z_dim, cfg.width).to(dev).train()

    bank, best_losses, passes = [], [], 0
    start = time.perf_counter()
    net = None
    with frozen(teacher):
        for r in progress(range(cfg.rounds), desc="NAYER synthesis", disable=not show):
            if r % cfg.g_life == 0:
                net = fresh(r)
            net.redraw_noise(generator)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
            best, best_x = float("inf"), None
            for _ in range(cfg.g_steps):
                x = net(y)
                loss, _, _ = synthesis_loss(teacher, x, cfg.weights, targets=y)
                passes += len(y)
                if loss.item() < best:
                    best, best_x = loss.item(), x.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            bank.append(best_x)
            best_losses.append(best)
            if callback is not None:
                callback("synthesis", r + 1, best_x[:100].cpu(), None)
    seconds = time.perf_counter() - start
    history = {"best loss per round": torch.tensor(best_losses), "teacher image passes": torch.tensor(passes)}
    return torch.cat(bank), y.repeat(cfg.rounds), seconds, net.eval(), history


def nayer(teacher: nn.Module, student: nn.Module, config: NAYERConfig | None = None,
          test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
          callback: Callback | None = None, text_embeddings: torch.Tensor | None = None) -> DistillResult:
    """Synthesise a bank with NAYER, then KD on it. Teacher and student are unchanged on return."""
    cfg = config or NAYERConfig()
    images, targets, seconds, net, history = synthesise_bank(teacher, cfg, generator, text_embeddings, callback)
    result = distill(teacher, student, images, cfg.kd, test, generator=generator, callback=callback, method="NAYER")
    result.synth_seconds, result.n_images, result.generator = seconds, len(images), net
    result.history.update(history)
    return result
