"""All tuning methods behind one call, with the size knob and default learning rate of each.

The panel, the notebook's comparison table and the benchmark use :func:`run`, so that every
method is trained and measured the same way:

>>> result = methods.run("LoRA", model, task.train, size=4, config=TrainConfig(steps=100))
>>> deployed = methods.METHODS["LoRA"].deploy(result)      # merged: the base model's cost

``size`` means what the method's own knob means: LoRA rank, adapter bottleneck, prefix length,
number of soft tokens, CMA-ES generations (BBT). The default learning rates were tuned on the
world-lm question-answering task (:func:`lfmlab.tuning.tasks.world_qa`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from lfmlab.tuning import adapters, bbt, bitfit, finetune, lora, prefix, prompt, ptuning
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult

__all__ = ["Method", "METHODS", "run"]

Tuner = Callable[[nn.Module, object, int, TrainConfig, "Callback | None"], TuneResult]


@dataclass(frozen=True)
class Method:
    """A tuning method: its size knob (label, default, range), default learning rate, the call
    that tunes, and ``deploy(result)``: the model served at inference."""

    name: str
    family: str
    size_label: str
    size: int
    size_range: tuple[int, int]
    lr: float
    tune: Tuner
    deploy: Callable[[TuneResult], nn.Module] = lambda r: r.model
    gradients: bool = True


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("full fine-tuning", "weights", "(all weights)", 0, (0, 0), 1e-3,
           lambda m, d, s, c, cb: finetune.finetune(m, d, c, cb)),
    Method("BitFit", "weights", "(biases)", 0, (0, 0), 2e-2,
           lambda m, d, s, c, cb: bitfit.bitfit(m, d, c, cb)),
    Method("adapters", "weights", "bottleneck r", 8, (1, 128), 1e-2,
           lambda m, d, s, c, cb: adapters.adapter_tuning(m, d, s, config=c, callback=cb)),
    Method("AdaMix", "weights", "bottleneck r", 8, (1, 128), 1e-2,
           lambda m, d, s, c, cb: adapters.adamix(m, d, s, experts=4, config=c, callback=cb)),
    Method("LoRA", "weights", "rank r", 4, (1, 64), 1e-2,
           lambda m, d, s, c, cb: lora.lora(m, d, rank=s, config=c, callback=cb),
           deploy=lambda r: lora.merge_and_unload(r.model)),
    Method("prefix tuning", "input", "prefix length", 8, (1, 64), 1e-2,
           lambda m, d, s, c, cb: prefix.prefix_tuning(m, d, s, reparam=True, config=c, callback=cb)),
    Method("prompt tuning", "input", "soft tokens", 10, (1, 64), 3e-1,
           lambda m, d, s, c, cb: prompt.prompt_tuning(m, d, s, config=c, callback=cb)),
    Method("P-tuning", "input", "soft tokens", 10, (1, 64), 1e-2,
           lambda m, d, s, c, cb: ptuning.ptuning(m, d, s, config=c, callback=cb)),
    Method("BBT", "input", "CMA-ES generations", 20, (1, 500), 0.0,
           lambda m, d, s, c, cb: bbt.bbt(m, d, generations=s, seed=c.seed, callback=cb), gradients=False),
]}


def run(name: str, model: nn.Module, data, size: int | None = None, config: TrainConfig | None = None,
        callback: Callback | None = None, lr: float | None = None) -> TuneResult:
    """Tune ``model`` on ``data`` with method ``name`` (see :data:`METHODS`). ``lr`` (or
    ``config.lr`` when ``lr`` is None and a config is given) overrides the method's default."""
    if name not in METHODS:
        raise KeyError(f"unknown tuning method {name!r}; choose one of: {', '.join(METHODS)}")
    m = METHODS[name]
    cfg = config if config is not None else TrainConfig(lr=m.lr)
    if lr is not None:
        cfg = cfg.replace(lr=lr)
    s = m.size if size is None else int(size)
    lo, hi = m.size_range
    if (lo, hi) != (0, 0) and not lo <= s <= hi:
        raise ValueError(f"{name}: {m.size_label} must be between {lo} and {hi}, got {s}")
    return m.tune(model, data, s, cfg, callback)
