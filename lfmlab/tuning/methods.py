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

from typing import Callable

from torch import nn

from lfmlab.core.registry import MethodInfo
from lfmlab.tuning import (
    adapters,
    bbt,
    bdpl,
    bitfit,
    dora,
    finetune,
    fusion,
    ia3,
    instruct,
    lora,
    prefix,
    prompt,
    ptuning,
    wiseft,
)
from lfmlab.tuning.train import Callback, TrainConfig, TuneResult

__all__ = ["Method", "METHODS", "run", "tuners"]

Tuner = Callable[[nn.Module, object, int, TrainConfig, "Callback | None"], TuneResult]


def Method(name: str, family: str, size_label: str, size: int, size_range: tuple[int, int], lr: float,
           tune: Tuner | None, run, summary: str, paper: str, section: str,
           deploy: Callable[[TuneResult], nn.Module] = lambda r: r.model, gradients: bool = True) -> MethodInfo:
    """A registry row of a tuning method: its size knob (label, default, range), default learning
    rate, ``tune`` (the uniform call :func:`run` makes; ``None`` for a method that is not trained
    from data on its own) and ``deploy(result)``: the model served at inference."""
    return MethodInfo(name, summary, paper, section, run, TuneResult, "02_model_tuning", TrainConfig,
                      {"family": family, "size_label": size_label, "size": size, "size_range": size_range, "lr": lr,
                       "tune": tune, "deploy": deploy, "gradients": gradients})


METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    Method("full fine-tuning", "weights", "(all weights)", 0, (0, 0), 1e-3,
           lambda m, d, s, c, cb: finetune.finetune(m, d, c, cb), finetune.finetune,
           "train every weight", "(the baseline)", "§2.1.1"),
    Method("BitFit", "weights", "(biases)", 0, (0, 0), 2e-2,
           lambda m, d, s, c, cb: bitfit.bitfit(m, d, c, cb), bitfit.bitfit,
           "train the biases only", "Ben Zaken et al. 2022", "§2.1.1"),
    Method("adapters", "weights", "bottleneck r", 8, (1, 128), 1e-2,
           lambda m, d, s, c, cb: adapters.adapter_tuning(m, d, s, config=c, callback=cb), adapters.adapter_tuning,
           "small bottleneck layers after attention and MLP", "Houlsby et al. 2019", "§2.1.1"),
    Method("AdaMix", "weights", "bottleneck r", 8, (1, 128), 1e-2,
           lambda m, d, s, c, cb: adapters.adamix(m, d, s, experts=4, config=c, callback=cb), adapters.adamix,
           "a mixture of adapters, averaged into one for inference", "Wang et al. 2022", "§2.1.1"),
    Method("LoRA", "weights", "rank r", 4, (1, 64), 1e-2,
           lambda m, d, s, c, cb: lora.lora(m, d, rank=s, config=c, callback=cb), lora.lora,
           "a low-rank update B A beside each weight, merged for inference", "Hu et al. 2022", "§2.1.1",
           deploy=lambda r: lora.merge_and_unload(r.model)),
    Method("DoRA", "weights", "rank r", 4, (1, 64), 1e-2,
           lambda m, d, s, c, cb: dora.dora(m, d, rank=s, config=c, callback=cb), dora.dora,
           "LoRA on the direction of each weight, plus a trained magnitude, merged for inference",
           "Liu et al. 2024", "§2.1.1", deploy=lambda r: dora.merge_and_unload(r.model)),
    # (IA)³'s rate was chosen on a subject split no notebook seed uses (world_qa seed 99, 120 steps):
    # held-out exact match 0.58 / 0.79 / 0.80 / 0.68 at 1e-2 / 3e-2 / 1e-1 / 3e-1
    # AdapterFusion's rate was chosen on seed 99 (target "language"; held-out exact match 0.87 / 0.91 /
    # 0.78 at 1e-4 / 3e-4 / 1e-3 with 3 sources and 30 steps, 0.93 / 0.97 / 0.89 with 5 and 60)
    Method("AdapterFusion", "weights", "bottleneck r", 8, (1, 128), 3e-4, None, fusion.adapter_fusion,
           "an attention over frozen adapters of other tasks, learned on the target task", "Pfeiffer et al. 2021",
           "§2.1.2"),
    Method("(IA)³", "weights", "(scaling vectors)", 0, (0, 0), 1e-1,
           lambda m, d, s, c, cb: ia3.ia3(m, d, config=c, callback=cb), ia3.ia3,
           "learned vectors rescale the keys, values and MLP activations, folded in for inference",
           "Liu et al. 2022", "§2.1.1", deploy=lambda r: ia3.merge_and_unload(r.model)),
    Method("prefix tuning", "input", "prefix length", 8, (1, 64), 1e-2,
           lambda m, d, s, c, cb: prefix.prefix_tuning(m, d, s, reparam=True, config=c, callback=cb),
           prefix.prefix_tuning, "trainable keys and values in front of every attention layer",
           "Li and Liang 2021", "§2.2"),
    Method("prompt tuning", "input", "soft tokens", 10, (1, 64), 3e-1,
           lambda m, d, s, c, cb: prompt.prompt_tuning(m, d, s, config=c, callback=cb), prompt.prompt_tuning,
           "trainable embeddings in front of the input", "Lester et al. 2021", "§2.2"),
    Method("P-tuning", "input", "soft tokens", 10, (1, 64), 1e-2,
           lambda m, d, s, c, cb: ptuning.ptuning(m, d, s, config=c, callback=cb), ptuning.ptuning,
           "soft tokens computed by a small prompt encoder", "Liu et al. 2021", "§2.2"),
    Method("BBT", "input", "CMA-ES generations", 20, (1, 500), 0.0,
           lambda m, d, s, c, cb: bbt.bbt(m, d, generations=s, seed=c.seed, callback=cb), bbt.bbt,
           "a soft prompt searched by CMA-ES in a random subspace, forward passes only", "Sun et al. 2022",
           "§2.2", gradients=False),
    # the panel's BDPL: candidates from the task's own text (64), the settings of bdpl.bdpl
    Method("BDPL", "input", "prompt tokens", 5, (1, 20), 2e-3,
           lambda m, d, s, c, cb: bdpl.bdpl(m, d, n_tokens=s, seed=c.seed, callback=cb), bdpl.bdpl,
           "a discrete prompt: a distribution over candidate tokens per position, learned by policy "
           "gradient from loss values only", "Diao et al. 2023", "§2.2", gradients=False),
    Method("WiSE-FT", "weights", "(α)", 0, (0, 0), 0.0, None, wiseft.wise_ft,
           "interpolate the weights of the zero-shot and the fine-tuned model", "Wortsman et al. 2022", "§2.1.1",
           gradients=False),
    Method("instruction tuning", "weights", "(all weights)", 0, (0, 0), 1e-3, None, instruct.instruction_tune,
           "tune on instructions of several relations, answer a held-out one zero-shot", "Wei et al. 2022",
           "§2.1"),
]}


def tuners() -> list[str]:
    """The methods :func:`run` trains from data alone (the panel's and the benchmark's choices)."""
    return [name for name, m in METHODS.items() if m.tune is not None]


def run(name: str, model: nn.Module, data, size: int | None = None, config: TrainConfig | None = None,
        callback: Callback | None = None, lr: float | None = None) -> TuneResult:
    """Tune ``model`` on ``data`` with method ``name`` (see :data:`METHODS`). ``lr`` (or
    ``config.lr`` when ``lr`` is None and a config is given) overrides the method's default."""
    if name not in METHODS or METHODS[name].tune is None:
        raise KeyError(f"{name!r} is not a tuning method that run() trains; choose one of: {', '.join(tuners())}")
    m = METHODS[name]
    cfg = config if config is not None else TrainConfig(lr=m.lr)
    if lr is not None:
        cfg = cfg.replace(lr=lr)
    s = m.size if size is None else int(size)
    lo, hi = m.size_range
    if (lo, hi) != (0, 0) and not lo <= s <= hi:
        raise ValueError(f"{name}: {m.size_label} must be between {lo} and {hi}, got {s}")
    return m.tune(model, data, s, cfg, callback)
