"""Meta-gradient throughput: ``torch.func`` vmap over tasks against a per-task autograd loop
(and torchopt's per-task loop, where torchopt is importable), at 1 to 1,024 tasks per meta-batch.

    python benchmarks/meta.py                       # sinusoid MAML, CPU, 1 thread
    python benchmarks/meta.py --problem digits      # 5-way 1-shot conv MAML, 5 inner steps
    python benchmarks/meta.py --device cuda --threads 0

One JSON line per measurement: device, problem, method, tasks (meta-batch size), seconds (median
time of one full second-order meta-gradient, forward and backward), tasks_per_s, and the speed-up
over the loop at the same size. Not part of the test suite.

torchopt is optional and not a dependency of lfmlab. It was timed here with
``pip install --no-deps --target DIR torchopt optree graphviz`` and ``PYTHONPATH=DIR``, which
leaves the environment's torch alone (torchopt 0.7.3 imports and runs on torch 2.13).
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

# isort: split
import argparse
import json
import statistics
import sys
import time

import torch

from lfmlab import runtime
from lfmlab.meta import maml, nets, pools, sinusoid
from lfmlab.meta.common import cross_entropy, mse


def problem(name: str, dev: torch.device):
    """(model, task sampler, loss, inner steps, inner lr) of a benchmark problem."""
    if name == "sine":
        return sinusoid.model(seed=0, device=dev), sinusoid.sampler(10, 10, dev), mse, 1, 0.01
    if name == "digits":
        pool = torch.rand(40, 30, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(dev)
        return nets.classifier(8, 5, seed=0, device=dev), pools.sampler(pool, 5, 1, 15), cross_entropy, 5, 0.4
    raise ValueError(f"unknown problem {name!r}")


def torchopt_meta_gradient(model, tasks, loss, steps, lr):
    """The meta-gradient as torchopt's MAML example computes it: MetaSGD, one task at a time."""
    import torchopt

    sx, sy, qx, qy = tasks
    model.zero_grad(set_to_none=True)
    inner = torchopt.MetaSGD(model, lr=lr)
    state = torchopt.extract_state_dict(model)
    n = sx.shape[0]
    for i in range(n):
        for _ in range(steps):
            inner.step(loss(model(sx[i]), sy[i]))
        (loss(model(qx[i]), qy[i]) / n).backward()
        torchopt.recover_state_dict(model, state)
    return {k: p.grad for k, p in model.named_parameters()}


def timed(fn, dev: torch.device, min_seconds: float, max_repeats: int) -> float:
    """Median wall time of ``fn()`` after one warm-up call (CUDA synchronised)."""
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    fn()
    sync()
    times: list[float] = []
    while len(times) < max_repeats and (sum(times) < min_seconds or len(times) < 3):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="sine", choices=["sine", "digits"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default=None, help="comma-separated tasks per meta-batch (default 1,4,...,1024)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--max-repeats", type=int, default=20)
    ap.add_argument("--no-loop-above", type=int, default=1024, help="skip the loops above this size")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = runtime.device(args.device)
    default = "1,4,16,64,256,1024" if args.problem == "sine" else "1,4,16,64,256"
    sizes = [int(s) for s in (args.sizes or default).split(",")]
    model, sample, loss, steps, lr = problem(args.problem, dev)
    params = maml.params_of(model)
    try:
        import torchopt  # noqa: F401
        have_torchopt = True
    except ImportError:
        have_torchopt = False
        print(json.dumps({"note": "torchopt not importable: skipped"}), flush=True)

    for n in sizes:
        tasks = tuple(sample(n, torch.Generator().manual_seed(n)))
        methods = {"vmap": lambda: maml.meta_gradient(model, params, tasks, loss, steps, lr)}
        if n <= args.no_loop_above:
            methods["loop"] = lambda: maml.meta_gradient_loop(model, params, tasks, loss, steps, lr)
            if have_torchopt:
                methods["torchopt"] = lambda: torchopt_meta_gradient(model, tasks, loss, steps, lr)
        seconds = {m: timed(fn, dev, args.min_seconds, args.max_repeats) for m, fn in methods.items()}
        for m, s in seconds.items():
            row = {"device": str(dev), "threads": torch.get_num_threads() if dev.type == "cpu" else None,
                   "problem": args.problem, "method": m, "tasks": n, "inner_steps": steps,
                   "seconds": round(s, 6), "tasks_per_s": round(n / s, 1)}
            if "loop" in seconds:
                row["speedup_vs_loop"] = round(seconds["loop"] / s, 2)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
