"""The one training loop every gradient-based tuning method uses, and what it returns.

A method decides *which* parameters learn (all of them, the biases, LoRA factors, a prefix...)
and builds the model around them; :func:`fit` then runs AdamW on exactly those parameters.
Data is anything with ``len(data)`` and ``data.loss(model, idx)`` (see :mod:`lfmlab.tuning.tasks`).

:class:`TuneResult` is the common record: the new model, the trainable parameter count and its
share of the base model, the loss curve, and the wall time. :func:`latency` measures inference
time, the survey's point in §2.1.2 (adapters add a delay, a merged LoRA does not).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.schedules import warmup

__all__ = ["TrainConfig", "TuneResult", "fit", "latency", "latencies",
           "latency_ratios", "flops", "Callback"]

Callback = Callable[[int, float], None]  # (step, loss) -> None, e.g. a live loss plot


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`fit`. ``every``: how often (steps) the callback sees the loss."""

    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup: float = 0.0  # share of steps with a linear learning-rate warm-up
    clip: float = 1.0
    seed: int = 0
    every: int = 10

    def replace(self, **kw) -> "TrainConfig":
        return TrainConfig(**{**self.__dict__, **kw})


@dataclass
class TuneResult:
    """What a tuning method returns.

    ``model``: the tuned model (new; the input model is unchanged). ``trainable``: parameters
    that learned; ``base``: parameters of the model it started from (``share = trainable / base``).
    ``losses``: training loss every step. ``info``: method-specific extras.
    """

    method: str
    model: nn.Module
    trainable: int
    base: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.trainable / max(1, self.base)

    def __repr__(self) -> str:
        last = f", final loss {self.losses[-1]:.3f}" if self.losses else ""
        return (f"TuneResult({self.method!r}, {self.trainable:,} trainable = {100 * self.share:.2f}% of "
                f"{self.base:,}{last}, {self.seconds:.1f}s)")


def fit(model: nn.Module, data, config: TrainConfig | None = None, callback: Callback | None = None,
        params: Sequence[nn.Parameter] | None = None, loss_fn: Callable | None = None,
        desc: str = "tuning") -> tuple[list[float], float]:
    """Train the trainable parameters of ``model`` on ``data`` with AdamW; returns (losses, seconds).

    Minibatches are drawn without replacement, epoch after epoch (seeded by ``config.seed``).
    ``loss_fn(model, idx)`` replaces ``data.loss`` (AdaMix adds a consistency term, say).
    The model is in train mode while it learns and in eval mode on return. ``lr = 0`` is the
    null run of a method: the same steps and losses, parameters that never move.
    """
    from lfmlab import validate
    from lfmlab.progress import progress

    cfg = config or TrainConfig()
    validate.number("lr", cfg.lr, 0.0, None, fix="A learning rate is a finite number ≥ 0, e.g. 1e-3.")
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.lr < 0:
        raise ValueError(f"steps and batch_size must be positive and lr >= 0 (got {cfg.steps}, {cfg.batch_size}, "
                         f"{cfg.lr})")
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    loss_fn = loss_fn or data.loss
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = warmup(opt, warm)
    g = torch.Generator().manual_seed(cfg.seed)
    n, bs = len(data), min(cfg.batch_size, len(data))
    order, pos = torch.randperm(n, generator=g), 0
    losses: list[torch.Tensor] = []
    model.train()
    start = time.perf_counter()
    bar = progress(total=cfg.steps, desc=desc, disable=callback is not None)
    try:
        for step in range(cfg.steps):
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos:pos + bs]
            pos += bs
            loss = loss_fn(model, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            sched.step()
            losses.append(loss.detach())
            bar.update(1)
            if (step + 1) % cfg.every == 0 or step + 1 == cfg.steps:
                value = float(loss.detach())  # one sync every `every` steps
                if value != value or value in (float("inf"), float("-inf")):
                    raise validate.NotFinite(
                        f"the training loss is {value} at step {step + 1}: training diverged (lr = {cfg.lr:g}). "
                        "Lower the learning rate; nothing usable was trained.")
                bar.set_postfix(loss=value)
                if callback is not None:
                    callback(step + 1, value)
    finally:
        bar.close()
        model.eval()
    seconds = time.perf_counter() - start
    validate.finite(f"a trained parameter (lr = {cfg.lr:g})", {i: p.detach() for i, p in enumerate(params)})
    return torch.stack(losses).float().cpu().tolist(), seconds


@torch.no_grad()
def latency(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass on this batch (GPU-synchronised when on a GPU)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    cuda = input_ids.device.type == "cuda"
    times = []
    for i in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize(input_ids.device)
        start = time.perf_counter()
        model(input_ids=input_ids, attention_mask=mask)
        if cuda:
            torch.cuda.synchronize(input_ids.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(sorted(times)[len(times) // 2])


def _timed_rounds(models: Mapping[str, nn.Module], input_ids: torch.Tensor, mask: torch.Tensor,
                  rounds: int, warmup: int, block: int) -> dict[str, list[float]]:
    """Seconds per forward pass of each model in each round: every round runs every model
    ``block`` times in a row, in a rotating order, with the garbage collector paused."""
    import gc

    names = list(models)
    cuda = input_ids.device.type == "cuda"
    times: dict[str, list[float]] = {n: [] for n in names}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                if cuda:
                    torch.cuda.synchronize(input_ids.device)
                start = time.perf_counter()
                for _ in range(block):
                    models[name](input_ids=input_ids, attention_mask=mask)
                if cuda:
                    torch.cuda.synchronize(input_ids.device)
                if r >= warmup:
                    times[name].append((time.perf_counter() - start) / block)
    finally:
        if enabled:
            gc.enable()
    return times


def _median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values when their number is even: taking the upper
    one would pick one side of a two-cluster sample, such as a first-in-the-round effect)."""
    v = sorted(values)
    n = len(v)
    return float(v[n // 2]) if n % 2 else float((v[n // 2 - 1] + v[n // 2]) / 2)


@torch.no_grad()
def latencies(models: Mapping[str, nn.Module], input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              rounds: int = 30, warmup: int = 3, block: int = 4) -> dict[str, float]:
    """Median seconds of one forward pass for each model, measured in interleaved rounds.

    Each round runs every model ``block`` times, in a rotating order, so that a busy moment of
    a shared machine slows all models alike; the median over rounds then compares them fairly.
    To compare models, prefer :func:`latency_ratios`.
    """
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    times = _timed_rounds(models, input_ids, mask, rounds, warmup, block)
    return {n: _median(t) for n, t in times.items()}


@torch.no_grad()
def latency_ratios(models: Mapping[str, nn.Module], input_ids: torch.Tensor,
                   attention_mask: torch.Tensor | None = None, reference: str | None = None,
                   rounds: int = 30, warmup: int = 3, block: int = 4) -> dict[str, float]:
    """Each model's forward time relative to ``reference`` (default: the first model), paired by
    round: the median, over full rotations of the running order, of (model's time / reference's
    time in the same rotation).

    Pairing cancels what slows a whole round down (another job on a shared CPU); on a 2-core
    machine the ratio of the same model with itself stays within about ±5 %, where ratios of
    separate medians wandered by up to 10 %.
    """
    if not models:
        raise ValueError("latency_ratios needs at least one model")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ValueError(f"the reference {reference!r} is not among the models {list(models)}")
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    times = _timed_rounds(models, input_ids, mask, rounds, warmup, block)
    ref = _cycles(times[reference], len(models))
    return {n: _median([a / b for a, b in zip(_cycles(t, len(models)), ref)]) for n, t in times.items()}


def _cycles(times: Sequence[float], n: int) -> list[float]:
    """Sums over each full rotation of the running order (``n`` rounds, in which every model has
    run once in every position), so that a model's place in the round cancels out of the ratio;
    a last, incomplete rotation is kept as it is when it is the only one."""
    full = [sum(times[i:i + n]) for i in range(0, len(times) - n + 1, n)]
    return full or [sum(times)]


@torch.no_grad()
def flops(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> int:
    """Floating-point operations of one forward pass, counted by ``torch.utils.flop_counter``
    (matrix products and attention; elementwise work is not counted). Deterministic: the
    machine-independent side of inference cost."""
    from torch.utils.flop_counter import FlopCounterMode

    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=input_ids, attention_mask=mask)
    return int(counter.get_total_flops())
