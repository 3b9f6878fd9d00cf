"""Pieces shared by the distillation methods: the result, the synthesis loss terms, a generator.

Survey §3. Every data-free method has two parts (eq. 1-2): *make* inputs from the teacher,
then *distil* on them (Hinton KD, :mod:`lfmlab.distill.kd`). What differs is how inputs are
made, and that is a weighted sum of a few loss terms on a batch x̂ [N, 1, 8, 8]
(:class:`Weights`, :func:`synthesis_loss`)::

    ce           CE(T(x̂), y)                       class term: x̂ must look like class y to the teacher
                                                    (DAFL's "one-hot" loss uses y = argmax T(x̂))
    bn           Σ_l ||μ_l(x̂)-μ_l||² + ||σ_l(x̂)-σ_l||²     DeepInversion's BatchNorm statistics (eq. 4)
    tv, l2       R_TV(x̂), ||x̂||²                   the DeepDream image prior (eq. 3)
    activation   -mean |f_T(x̂)|                    DAFL: real images excite the features (eq. 6)
    entropy      -H(mean_i softmax T(x̂_i))         DAFL: every class equally often (eq. 6)
    adversarial  -D(T(x̂), S(x̂))                    ZSKT/DFAD: where the student is wrong (eq. 7)

Noise optimisation (DeepInversion, ZSKD) descends this loss on the pixels; generative methods
(DAFL, ZSKT, Fast) on the weights of a :class:`Generator` that maps noise z to images.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.inversion import bn_statistics, total_variation
from lfmlab.core.params import device_of, frozen, trainable_copy
from lfmlab.core.schedules import cosine
from lfmlab.progress import progress

__all__ = ["Weights", "DistillResult", "Generator", "Evaluator", "synthesis_loss", "discrepancy",
           "teacher_features", "kd_loss", "TERMS", "Callback"]

TERMS = ("ce", "bn", "tv", "l2", "activation", "entropy", "adversarial")

# callback(phase, step, images [n, 1, 8, 8] or None, test accuracy or None), phase "synthesis"
# (images being optimised, no student yet) or "training" (the student's curve): live plots
Callback = Callable[[str, int, "torch.Tensor | None", "float | None"], None]


@dataclass
class Weights:
    """The weight of each synthesis loss term (0 switches a term off and skips its cost)."""

    ce: float = 0.0
    bn: float = 0.0
    tv: float = 0.0
    l2: float = 0.0
    activation: float = 0.0
    entropy: float = 0.0
    adversarial: float = 0.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> "Weights":
        """Every weight a finite number ≥ 0 (raises validate.BadValue naming the term); returns self."""
        from lfmlab import validate

        for k, v in asdict(self).items():
            setattr(self, k, validate.number(f"{k} weight", v, 0.0, fix="A loss weight is ≥ 0; 0 turns the term off."))
        return self

    def active(self) -> list[str]:
        return [k for k, v in asdict(self).items() if v != 0]


class WeightedConfig:
    """Mixin for a dataclass config with a ``weights: Weights`` field."""

    weights: Weights

    def with_weights(self, w: Weights):
        """A deep copy of the config whose loss weights are a copy of ``w``."""
        out = copy.deepcopy(self)
        out.weights = copy.copy(w).check()
        return out


@dataclass
class DistillResult:
    """What a distillation run gives back.

    ``student``: the trained copy (the given student is untouched); ``accuracy``: its top-1 on
    the real test split (nan when none was given); ``curve_steps``/``curve_accuracy`` [K]: the
    accuracy during training; ``images`` [n, 1, 8, 8] / ``labels`` [n]: a sample of the
    inputs the student learned from, with the teacher's label; ``synth_seconds``: time spent
    making inputs, ``train_seconds``: time spent training the student; ``n_images``: images
    synthesised in all; ``history``: loss terms per step; ``generator``: the trained
    generator of generative methods (eval mode), else None.
    """

    method: str
    student: nn.Module
    accuracy: float
    curve_steps: torch.Tensor
    curve_accuracy: torch.Tensor
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    synth_seconds: float = 0.0
    train_seconds: float = 0.0
    n_images: int = 0
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    generator: nn.Module | None = None

    @property
    def seconds(self) -> float:
        return self.synth_seconds + self.train_seconds

    def __repr__(self) -> str:
        return (f"DistillResult({self.method}: test accuracy {self.accuracy:.1%}, {self.n_images} images, "
                f"synthesis {self.synth_seconds:.1f}s + training {self.train_seconds:.1f}s)")


def teacher_features(teacher: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits [N, C], penultimate features [N, D] or None) of a model with ``.features``/``.head``."""
    if hasattr(teacher, "features") and hasattr(teacher, "head"):
        f = teacher.features(x)
        return teacher.head(f), f
    return teacher(x), None


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """τ² KL(softmax(t/τ) || softmax(s/τ)), mean over the batch; logits [B, C]."""
    t = float(temperature)
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def discrepancy(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                kind: Literal["kl", "l1"] = "kl", reduction: str = "mean") -> torch.Tensor:
    """D(T, S) of eq. 7: KL(softmax T || softmax S) (ZSKT) or mean |T - S| on logits (DFAD's MAE).

    ``reduction="none"`` gives one value per input [N]."""
    if kind == "kl":
        d = (F.softmax(teacher_logits, -1) * (F.log_softmax(teacher_logits, -1)
                                               - F.log_softmax(student_logits, -1))).sum(-1)
    elif kind == "l1":
        d = (teacher_logits - student_logits).abs().mean(-1)
    else:
        raise ValueError(f"discrepancy must be 'kl' or 'l1', got {kind!r}")
    return d if reduction == "none" else d.mean()


def synthesis_loss(teacher: nn.Module, x: torch.Tensor, weights: Weights, targets: torch.Tensor | None = None,
                   student: nn.Module | None = None, kind: Literal["kl", "l1"] = "kl",
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """The weighted loss of the module docstring on a batch x̂ [N, 1, 8, 8].

    ``targets`` [N] class labels, or [N, C] soft targets (ZSKD); None: the teacher's own argmax
    (DAFL's one-hot loss). ``student`` is needed for the adversarial term. The teacher must be
    in eval mode (``frozen``): its BN layers then normalise with the stored statistics, and the
    forward hooks of :func:`~lfmlab.core.inversion.bn_statistics` compare them with x̂'s.
    Returns (total loss, {term: detached value}, teacher logits [N, C] detached).
    """
    terms: dict[str, torch.Tensor] = {}
    with bn_statistics(teacher if weights.bn else nn.Identity()) as bn_terms:
        logits, feats = teacher_features(teacher, x)
    if weights.ce:
        y = logits.argmax(-1) if targets is None else targets
        terms["ce"] = F.cross_entropy(logits, y)
    if weights.bn:
        terms["bn"] = torch.stack(bn_terms).sum()
    if weights.tv:
        terms["tv"] = total_variation(x).mean()
    if weights.l2:
        terms["l2"] = x.pow(2).flatten(1).sum(1).mean()
    if weights.activation:
        if feats is None:
            raise ValueError("the activation term needs a teacher with .features and .head")
        terms["activation"] = -feats.abs().mean()
    if weights.entropy:
        p_mean = F.softmax(logits, -1).mean(0)                               # [C]
        terms["entropy"] = (p_mean * p_mean.clamp_min(1e-8).log()).sum()     # -H(p̄)
    if weights.adversarial:
        if student is None:
            raise ValueError("the adversarial term needs the student")
        terms["adversarial"] = -discrepancy(logits, student(x), kind)
    total = sum((getattr(weights, k) * v for k, v in terms.items()), torch.zeros((), device=x.device))
    return total, {k: v.detach() for k, v in terms.items()}, logits.detach()


class Generator(nn.Module):
    """z [N, z_dim] -> images [N, 1, 8, 8] in (0, 1), DAFL's generator shrunk to 8x8 digits.

    linear -> [2w, 2, 2] -> BN -> up x2 -> conv3x3 -> BN -> LeakyReLU -> up x2 -> conv3x3 (w)
    -> BN -> LeakyReLU -> conv3x3 (1) -> sigmoid.
    """

    def __init__(self, z_dim: int = 32, width: int = 32, image_shape: tuple[int, int, int] = (1, 8, 8)):
        super().__init__()
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image height and width must be multiples of 4, got {image_shape}")
        self.z_dim, self.width, self.image_shape = int(z_dim), int(width), image_shape
        self.fc = nn.Linear(self.z_dim, 2 * width * (h // 4) * (w // 4))
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, c, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _, h, w = self.image_shape
        return self.net(self.fc(z).view(z.shape[0], 2 * self.width, h // 4, w // 4))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z [n, z_dim], images [n, 1, 8, 8]) with z ~ N(0, I) drawn on the CPU (reproducible)."""
        dev = self.fc.weight.device
        z = torch.randn(n, self.z_dim, generator=generator).to(dev)
        return z, self(z)


class Evaluator:
    """Test accuracy of a student every ``every`` steps: the curve of :class:`DistillResult`."""

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor] | None, every: int,
                 callback: Callback | None = None):
        self.test, self.every, self.callback = test, max(int(every), 1), callback
        self.steps: list[int] = []
        self.values: list[float] = []

    @torch.no_grad()
    def accuracy(self, student: nn.Module) -> float:
        if self.test is None:
            return float("nan")
        x, y = self.test
        with frozen(student):
            return float((student(x).argmax(-1) == y).float().mean())

    def __call__(self, step: int, student: nn.Module, images: torch.Tensor | None = None,
                 last: bool = False) -> None:
        if step % self.every and not last:
            return
        if self.steps and self.steps[-1] == step:
            return
        acc = self.accuracy(student)
        self.steps.append(step)
        self.values.append(acc)
        if self.callback is not None:
            self.callback("training", step, None if images is None else images.detach()[:100].cpu(), acc)

    def curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.steps), torch.tensor(self.values)

    @property
    def final(self) -> float:
        return self.values[-1] if self.values else float("nan")


def generator_kd(teacher: nn.Module, student: nn.Module, net: Generator, weights: Weights, *, iterations: int,
                 g_steps: int = 1, s_steps: int = 1, batch_size: int = 128, lr_g: float = 1e-3,
                 lr_s: float = 3e-3, student_loss: Literal["kd", "kl", "l1"] = "kd", temperature: float = 4.0,
                 kind: Literal["kl", "l1"] = "kl", test: tuple[torch.Tensor, torch.Tensor] | None = None,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 eval_every: int = 50, method: str = "generator KD", show: bool = True) -> DistillResult:
    """The loop of every generator-based method (survey eq. 5 and 7), alternating per iteration:

    * ``g_steps`` generator steps on ``synthesis_loss(teacher, G(z), weights)`` (the student
      takes part, frozen, when ``weights.adversarial`` > 0: G then *maximises* D(T, S));
    * ``s_steps`` student steps on fresh G(z), minimising ``student_loss``: Hinton's τ² KL at
      ``temperature`` ("kd"), or D(T, S) itself ("kl", "l1": the minimax of ZSKT and DFAD).

    The student's curve counts student steps. Teacher, student and ``net`` are unchanged on return.
    """

    dev = device_of(teacher)
    g_net, s = trainable_copy(net, dev), trainable_copy(student, dev)
    opt_g = torch.optim.Adam(g_net.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_s = torch.optim.AdamW(s.parameters(), lr=lr_s, weight_decay=1e-4)
    total_s = max(iterations * s_steps, 1)
    sched = cosine(opt_s, total_s)
    ev = Evaluator(test, eval_every, callback)
    history: dict[str, list[torch.Tensor]] = {k: [] for k in weights.active()}
    history["student"] = []
    synth = train = 0.0
    step = 0
    x = None
    with frozen(teacher):
        for _ in progress(range(iterations), desc=method, disable=not show):
            t0 = time.perf_counter()
            for _ in range(g_steps):                                   # generator: make (hard) inputs
                _, x = g_net.sample(batch_size, generator)
                with frozen(s):
                    loss, terms, _ = synthesis_loss(teacher, x, weights, student=s, kind=kind)
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_g.step()
                for k, v in terms.items():
                    history[k].append(v)
            t1 = time.perf_counter()
            for _ in range(s_steps):                                   # student: imitate the teacher on them
                with torch.no_grad():
                    _, x = g_net.sample(batch_size, generator)
                    t_logits = teacher(x)
                out = s(x)
                if student_loss == "kd":
                    loss = kd_loss(out, t_logits, temperature)
                else:
                    loss = discrepancy(t_logits, out, student_loss)
                opt_s.zero_grad(set_to_none=True)
                loss.backward()
                opt_s.step()
                sched.step()
                history["student"].append(loss.detach())
                step += 1
                ev(step, s, x)
            t2 = time.perf_counter()
            synth, train = synth + t1 - t0, train + t2 - t1
    ev(step, s, x, last=True)
    s.eval()
    with torch.no_grad():
        g_net.eval()
        images = g_net.sample(100, torch.Generator().manual_seed(0))[1]
        with frozen(teacher):
            labels = teacher(images).argmax(-1)
    steps, acc = ev.curve()
    hist = {k: torch.stack(v).cpu() for k, v in history.items() if v}
    return DistillResult(method, s, ev.final, steps, acc, images.cpu(), labels.cpu(), synth, train,
                         iterations * batch_size * (g_steps + s_steps), hist, g_net)
