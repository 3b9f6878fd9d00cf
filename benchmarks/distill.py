"""Synthesis throughput of the data-free distillation methods: synthesised images per second.

    python benchmarks/distill.py                          # CPU, 1 thread
    python benchmarks/distill.py --device cuda --threads 0

What one "synthesised image" costs differs by family, so each method is timed doing what it
does to make a *usable* image for the student:

* DeepInversion / DeepDream / ZSKD: a batch of images optimised for ``--steps`` pixel steps
  (default 50; the notebook uses 150, so divide by 3 for its rate) -> images / s = batch / seconds;
* DAFL, ZSKT, DFAD: one generator step (loss and backward) plus the sampling of a fresh
  student batch from the generator -> images / s = batch / seconds per step;
* Fast (meta-learned generator): one round = ``inner_steps`` steps from the meta-init.

One JSON line per measurement: device, method, size (images per batch), seconds (median of
the repeats), throughput (images / s), steps (optimisation steps behind each image). Not part of the test suite.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

# isort: split
import argparse
import json
import statistics
import time

import torch

from lfmlab import runtime, zoo
from lfmlab.core.inversion import InversionConfig, synthesise
from lfmlab.core.params import frozen
from lfmlab.distill import common, fast


def timed(fn, dev: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` after one warm-up call (CUDA synchronised)."""
    fn()
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("--batch", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--steps", type=int, default=50, help="pixel steps per batch (noise optimisation)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = runtime.device(args.device)
    teacher = zoo.load("digits-teacher").model.to(dev).eval()
    student = zoo.load("digits-student").model.to(dev).eval()
    g = torch.Generator().manual_seed(0)

    def emit(method: str, size: int, seconds: float, per: float, steps: int) -> None:
        print(json.dumps(dict(device=str(dev), method=method, size=size, seconds=round(seconds, 4),
                              throughput=round(per / seconds, 1), steps=steps)), flush=True)

    for n in args.batch:
        labels = torch.arange(10).repeat(n // 10)
        soft = torch.softmax(torch.randn(n, 10, generator=g) * 2, -1)
        noise_opt = {
            "DeepInversion": lambda: synthesise(teacher, labels, InversionConfig(steps=args.steps), g),
            "DeepDream prior (no BN)": lambda: synthesise(teacher, labels, InversionConfig(steps=args.steps, bn=0), g),
            "ZSKD": lambda: synthesise(teacher, soft, InversionConfig(steps=args.steps, temperature=20.0, tv=0, l2=0,
                                                                      bn=0), g),
        }
        for name, fn in noise_opt.items():
            emit(name, n, timed(fn, dev, args.repeats), n, args.steps)

        for name, weights, kind in (("DAFL", common.Weights(ce=1, activation=0.1, entropy=5), "kl"),
                                    ("ZSKT (KL)", common.Weights(adversarial=1), "kl"),
                                    ("DFAD (L1)", common.Weights(adversarial=1), "l1")):
            net = common.Generator().to(dev)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)

            def step(net=net, opt=opt, weights=weights, kind=kind) -> None:
                with frozen(teacher), frozen(student):
                    _, x = net.sample(n, g)
                    loss, _, _ = common.synthesis_loss(teacher, x, weights, student=student, kind=kind)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        net.sample(n, g)                                # the student's fresh batch

            emit(name, n, timed(step, dev, 5 * args.repeats), n, 1)

        cfg = fast.FastConfig(rounds=1, per_round=n, inner_steps=10)
        emit("Fast (meta generator, 10 inner steps)", n,
             timed(lambda: fast.meta_synthesise(teacher, cfg, g, show=False), dev, args.repeats), n, 10)


if __name__ == "__main__":
    main()
