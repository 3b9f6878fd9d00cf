"""Nearest-neighbour search for the kNN-LM datastore: queries/s of exact search in torch (CPU, and a
GPU when present) and of faiss (flat, and IVF at several nprobe) at 10k, 100k and 1M keys, with the
recall@k of the approximate index against exact search. One JSON line per measurement: device,
method, size (keys), seconds (for all queries), throughput (queries/s), recall, build_seconds.

    python benchmarks/retrieval.py                       # 10k, 100k, 1M keys of dimension 128 (world-lm's)
    python benchmarks/retrieval.py --sizes 10000 --threads 2

The keys are synthetic: a mixture of Gaussians (``--clusters`` centres) in world-lm's key dimension,
which, like real context vectors, are clustered (uniform random keys are the worst case for IVF).
Queries are fresh draws from the same mixture. Search time does not depend on what the vectors mean; recall
depends on how clustered they are, so the notebook also reports recall on world-lm's real keys.
"""
from __future__ import annotations

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

# isort: split
import argparse
import json
import math
import time

import torch


def keys_and_queries(n: int, dim: int, n_queries: int, clusters: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)                                          # overlapping clusters
    keys = centres[torch.randint(clusters, (n,), generator=g)] + torch.randn(n, dim, generator=g)   # [N, D]
    queries = centres[torch.randint(clusters, (n_queries,), generator=g)] + torch.randn(n_queries, dim, generator=g)
    return keys, queries


def timed(fn, device: torch.device, repeats: int) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return out, best


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    from lfmlab.retrieval.datastore import (
        FaissIndex,
        augmented_keys,
        exact_search,
        recall,
        require_faiss,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for torch and faiss")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if not torch.cuda.is_available():
        emit(note="no CUDA GPU here: exact torch search on the CPU only")
    try:
        faiss = require_faiss()
        faiss.omp_set_num_threads(args.threads)
    except ImportError as err:
        faiss = None
        emit(note=f"faiss not installed, exact torch search only: {err}")

    for n in args.sizes:
        keys, queries = keys_and_queries(n, args.dim, args.queries, args.clusters)
        base = dict(size=n, dim=args.dim, queries=args.queries, k=args.k, threads=args.threads,
                    memory_mb=round(keys.numel() * 4 / 2**20, 1))
        truth = None
        for dev in devices:
            kd, qd = keys.to(dev), queries.to(dev)
            start = time.perf_counter()
            aug = augmented_keys(kd)                                            # [k, ||k||²]: the datastore caches it
            built = time.perf_counter() - start
            exact_search(qd[:8], kd, args.k, augmented=aug)                     # warm-up
            found, secs = timed(lambda: exact_search(qd, kd, args.k, augmented=aug), dev, args.repeats)
            truth = truth or type(found)(found.distance.cpu(), found.index.cpu())
            if dev.type == "cpu":
                exact_cpu = secs
            emit(device=str(dev), method="exact-torch", seconds=round(secs, 4),
                 throughput=round(args.queries / secs, 1), recall=1.0, build_seconds=round(built, 4), **base)
        if faiss is None:
            continue
        start = time.perf_counter()
        flat = FaissIndex("flat").build(keys)
        build = time.perf_counter() - start
        found, secs = timed(lambda: flat.search(queries, args.k), torch.device("cpu"), args.repeats)
        emit(device="cpu", method="faiss-flat", seconds=round(secs, 4), throughput=round(args.queries / secs, 1),
             recall=round(recall(found, truth), 4), build_seconds=round(build, 2), **base)
        emit(device="cpu", method="exact-torch / faiss-flat", speed=round(secs / exact_cpu, 3),
             note="queries/s of exact torch search over faiss flat's, one process (target >= 0.9 at 100k keys)", **base)
        nlist = max(1, int(math.sqrt(n)))                                        # faiss' rule of thumb: ~sqrt(N) cells
        start = time.perf_counter()
        ivf = FaissIndex("ivf", nlist=nlist).build(keys)
        build = time.perf_counter() - start
        for nprobe in args.nprobe:
            ivf.index.nprobe = min(nprobe, nlist)
            found, secs = timed(lambda: ivf.search(queries, args.k), torch.device("cpu"), args.repeats)
            emit(device="cpu", method=f"faiss-ivf{nlist}-nprobe{nprobe}", seconds=round(secs, 4),
                 throughput=round(args.queries / secs, 1), recall=round(recall(found, truth), 4),
                 build_seconds=round(build, 2), **base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
