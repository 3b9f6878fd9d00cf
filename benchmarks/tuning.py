"""Tuning throughput: train steps per second of every method on world-lm question answering,
lfmlab's LoRA against peft's LoRA in the same run, and BBT's CMA-ES population scored in one
batched forward pass against one call per candidate.

    python benchmarks/tuning.py                        # CPU, 1 thread
    python benchmarks/tuning.py --device cuda --threads 0
    python benchmarks/tuning.py --steps 10 --methods LoRA adapters

One JSON line per measurement: device, method, size (the method's knob, or the population size),
seconds (median seconds per train step, or per population evaluation), throughput (examples per
second: batch / seconds, or candidates x examples / seconds), and extras. Not part of the test
suite. peft is a dev dependency only; its rows are skipped when it is not importable.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

# isort: split
import argparse
import copy
import json
import statistics
import time

import torch

from lfmlab import runtime, zoo
from lfmlab.core.params import count, frozen_copy
from lfmlab.tuning import (
    adapters,
    bbt,
    bitfit,
    dora,
    ia3,
    lora,
    methods,
    prefix,
    prompt,
    ptuning,
    tasks,
)
from lfmlab.tuning.train import TrainConfig, fit


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def per_step(model, data, steps: int, batch: int, lr: float, dev: torch.device) -> float:
    """Median seconds of one AdamW step of ``fit`` (timed as chunks of ``steps`` after a warm-up)."""
    cfg = TrainConfig(steps=2, lr=lr, batch_size=batch, every=10 ** 9)
    fit(model, data, cfg, callback=lambda *_: None)  # warm-up (and CUDA kernels)
    times = []
    for rep in range(3):
        sync(dev)
        start = time.perf_counter()
        fit(model, data, cfg.replace(steps=steps, seed=rep), callback=lambda *_: None)
        sync(dev)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def unfrozen(model, names=None):
    """``model`` with all parameters (or only ``names``) trainable."""
    for n, p in model.named_parameters():
        p.requires_grad_(names is None or n in names)
    return model


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: leave torch's default)")
    ap.add_argument("--steps", type=int, default=20, help="train steps per timing chunk")
    ap.add_argument("--batch", type=int, default=32)
    gradient_tuners = [n for n in methods.tuners() if methods.METHODS[n].gradients]
    ap.add_argument("--methods", nargs="*", default=gradient_tuners, choices=gradient_tuners)
    ap.add_argument("--populations", nargs="*", type=int, default=[4, 16, 64])
    ap.add_argument("--parts", nargs="*", default=["methods", "lora", "bbt"], choices=["methods", "lora", "bbt"])
    args = ap.parse_args()
    if "methods" not in args.parts:
        args.methods = []
    if args.threads:
        torch.set_num_threads(args.threads)
    runtime.setup(seed=0, device=args.device, verbose=False)
    dev = runtime.device()
    z = zoo.load("world-lm", device=dev)
    task = tasks.world_qa(z.tokenizer, device=dev)
    base = count(z.model)

    # 1. every gradient method: the same loop, data and batch; only what learns differs
    builders = {
        "full fine-tuning": lambda m: unfrozen(copy.deepcopy(m)),
        "BitFit": lambda m: unfrozen(frozen_copy(m), bitfit.bias_names(m)),
        "adapters": lambda m: adapters.add_adapters(m, methods.METHODS["adapters"].size),
        "AdaMix": lambda m: adapters.add_adapters(m, methods.METHODS["AdaMix"].size, experts=4),
        "LoRA": lambda m: lora.add_lora(m, methods.METHODS["LoRA"].size),
        "DoRA": lambda m: dora.add_dora(m, methods.METHODS["DoRA"].size),
        "(IA)³": lambda m: ia3.add_ia3(m),
        "prefix tuning": lambda m: prefix.add_prefix(m, methods.METHODS["prefix tuning"].size, reparam=True),
        "prompt tuning": lambda m: prompt.add_prompt(m, methods.METHODS["prompt tuning"].size),
        "P-tuning": lambda m: ptuning.add_ptuning(m, methods.METHODS["P-tuning"].size),
    }
    for name in args.methods:
        spec = methods.METHODS[name]
        wrapped = builders[name](z.model)
        trainable = count(wrapped, trainable_only=True)
        s = per_step(wrapped, task.train, args.steps, args.batch, spec.lr, dev)
        emit(device=str(dev), method=name, size=spec.size, seconds=s, throughput=args.batch / s,
             trainable=trainable, share=trainable / base, impl="lfmlab")

    # 2. LoRA: ours against peft's, same targets, rank and loop
    if "lora" in args.parts:
        lora_vs_peft(z, task, args, dev)
    if "bbt" in args.parts:
        bbt_population(z, task, args, dev)


def lora_vs_peft(z, task, args, dev) -> None:
    rank = methods.METHODS["LoRA"].size
    ours = lora.add_lora(z.model, rank=rank, targets="attn")
    s_ours = per_step(ours, task.train, args.steps, args.batch, 1e-2, dev)
    emit(device=str(dev), method="LoRA", size=rank, seconds=s_ours, throughput=args.batch / s_ours,
         trainable=count(ours, trainable_only=True), impl="lfmlab", comparison="lfmlab vs peft")
    try:
        import peft
    except ImportError:
        peft = None
    if peft is not None:
        cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(lora.lora_modules(ours)),
                              lora_dropout=0.0, fan_in_fan_out=True)
        ref = peft.get_peft_model(copy.deepcopy(z.model), cfg)
        s_ref = per_step(ref, task.train, args.steps, args.batch, 1e-2, dev)
        emit(device=str(dev), method="LoRA", size=rank, seconds=s_ref, throughput=args.batch / s_ref,
             trainable=count(ref, trainable_only=True), impl=f"peft {peft.__version__}", comparison="lfmlab vs peft",
             lfmlab_speedup=s_ref / s_ours)


def bbt_population(z, task, args, dev) -> None:
    """A CMA-ES population scored in batched calls against one full call per candidate."""
    pm = prompt.add_prompt(z.model, n_tokens=5).eval()
    examples = task.train.rows(range(32))
    d = z.model.get_input_embeddings().weight.shape[1]
    for lam in args.populations:
        prompts = torch.randn(lam, 5, d, device=dev) * 0.05
        result = {}
        for batched in (True, False):
            bbt.population_losses(pm, prompts, examples, batched)  # warm-up
            times = []
            for _ in range(3):
                sync(dev)
                start = time.perf_counter()
                bbt.population_losses(pm, prompts, examples, batched)
                sync(dev)
                times.append(time.perf_counter() - start)
            result[batched] = statistics.median(times)
            emit(device=str(dev), method=f"BBT population ({'batched' if batched else f'{lam} calls'})",
                 size=lam, seconds=result[batched], throughput=lam * 32 / result[batched], examples=32)
        emit(device=str(dev), method="BBT batched speed-up", size=lam, seconds=result[True],
             throughput=lam * 32 / result[True], speedup=result[False] / result[True])


if __name__ == "__main__":
    main()
