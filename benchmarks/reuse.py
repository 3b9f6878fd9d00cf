"""Merge time of lfmlab.reuse's operators for N models, on the CPU and (when present) a GPU,
with peft's ``merge_utils`` (a per-tensor reference) timed in the same run. One JSON line per
measurement: device, method, n_models, parameters, seconds, throughput (merged parameters/s).

    python benchmarks/reuse.py                 # GPT-2-layout state dicts (random init), N = 2, 4, 8
    python benchmarks/reuse.py --hidden 768 --layers 12 --n 2 4 8 16   # GPT-2 small sized

The state dicts are a randomly initialised GPT-2 (``lfmlab.zoo.hub.random_model``) plus random
"fine-tuning" deltas: the time of a merge does not depend on what the weights mean.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

# isort: split
import argparse
import json
import sys
import time

import torch


def _states(n: int, hidden: int, layers: int, device: torch.device, seed: int = 0):
    from lfmlab.zoo import hub

    model = hub.random_model("gpt2", seed=seed, hidden=hidden, layers=layers, heads=max(1, hidden // 64),
                             vocab=1024, positions=256)
    pre = {k: v.detach().to(device) for k, v in model.state_dict().items() if torch.is_floating_point(v)}
    g = torch.Generator(device=device).manual_seed(seed)
    fts = [{k: v + 0.01 * torch.randn(v.shape, generator=g, device=device) for k, v in pre.items()} for _ in range(n)]
    return pre, fts


def _time(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    from lfmlab.reuse import dare, fisher, interpolate, regmean, task_arithmetic, ties

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    args = ap.parse_args(argv)
    devices = [torch.device(d) for d in (args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))]
    if not torch.cuda.is_available():
        print(json.dumps({"note": "no CUDA GPU here: CPU only"}), flush=True)
    try:
        from peft.utils import merge_utils
    except ImportError:
        merge_utils = None
    for device in devices:
        for n in args.n:
            pre, fts = _states(n, args.hidden, args.layers, device)
            params = sum(v.numel() for v in pre.values())
            fishers = [{k: torch.rand_like(v) for k, v in ft.items()} for ft in fts]
            grams = [
                {
                    k[: -len(".weight")]: torch.eye(v.shape[1], device=device)
                    for k, v in pre.items()
                    if k.endswith(".weight") and v.dim() == 2 and "wte" not in k and "wpe" not in k
                }
                for _ in fts
            ]
            ops = {
                "uniform average": lambda: interpolate.uniform_average(fts),
                "task arithmetic": lambda: task_arithmetic.task_arithmetic(pre, fts, 0.3),
                "TIES (global trim)": lambda: ties.ties_merging(pre, fts, density=0.2, lam=1.0),
                "TIES (per tensor)": lambda: ties.ties_merging(pre, fts, density=0.2, lam=1.0, scope="tensor"),
                "DARE": lambda: dare.dare(pre, fts, density=0.3, lam=0.3),
                "Fisher": lambda: fisher.fisher_merging(fts, fishers),
                "RegMean": lambda: regmean.regmean(fts, grams),
            }
            if merge_utils is not None:
                w = torch.full((n,), 0.3, device=device)
                ops["peft task_arithmetic"] = lambda: {
                    k: pre[k] + merge_utils.task_arithmetic([f[k] - pre[k] for f in fts], w) for k in pre
                }
                ops["peft ties"] = lambda: {
                    k: pre[k] + merge_utils.ties([f[k] - pre[k] for f in fts], w, 0.2) for k in pre
                }
                ops["peft dare_linear"] = lambda: {
                    k: pre[k] + merge_utils.dare_linear([f[k] - pre[k] for f in fts], w, 0.3) for k in pre
                }
            for name, fn in ops.items():
                seconds = _time(fn, device)
                print(json.dumps({"device": str(device), "method": name, "n_models": n, "parameters": params,
                                  "seconds": round(seconds, 5), "throughput": round(n * params / seconds)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
