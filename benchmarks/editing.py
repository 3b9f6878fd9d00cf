"""Seconds per edit for each editor on world-lm, ROME's key covariance timed on its own, and
MEMIT's batch throughput. One JSON line per measurement.

    python benchmarks/editing.py              # device: cuda if available, else cpu
    LFMLAB_DEVICE=cpu python benchmarks/editing.py --edits 20
"""
from __future__ import annotations

import argparse
import json
import time

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)


def main() -> None:
    import torch

    from lfmlab import editing, runtime, zoo
    from lfmlab.data import world
    from lfmlab.editing import covariance, grace, memit, mend, rome

    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--memit-batches", type=int, nargs="*", default=[10, 50, 100])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = runtime.device()
    wlm = zoo.load("world-lm", device=dev)
    model, tok, W = wlm.model, wlm.tokenizer, world.load()
    reqs = W.edit_requests(args.edits, seed=0)

    def emit(method: str, size: int, seconds: float, **extra) -> None:
        print(json.dumps({"device": str(dev), "method": method, "size": size, "seconds": round(seconds, 4),
                          "per_edit_s": round(seconds / max(size, 1), 4), **extra}), flush=True)

    cov = covariance.estimate(model, tok, 0, use_disk=False)
    C = cov.matrix
    emit("rome-covariance", cov.tokens, cov.seconds, cached=cov.cached, note="tokens, computed once")
    prefixes = rome.random_prefixes(model, tok, 10)  # once, as notebook 07 and ROME's own code do
    bench = editing.Workbench(model, tok, W, layer=0, covariances={0: C}, prefixes=prefixes)
    editors = editing.editors(bench, {"ROME": None, "FT": None, "FT-L": None, "KN": None})  # the registry's
    per_edit = {}
    for name, ed in editors.items():
        start = time.perf_counter()
        for r in reqs:
            ed.add(r)            # one edit on the unedited model, then forgotten
            ed.clear()
        per_edit[name] = (time.perf_counter() - start) / len(reqs)
        emit(name, len(reqs), per_edit[name] * len(reqs))
    emit("ROME / FT-L", len(reqs), per_edit["ROME"] * len(reqs), ratio=round(per_edit["ROME"] / per_edit["FT-L"], 2),
         note="time per edit, ROME over FT-L (target <= 3)")
    t = time.perf_counter()
    editor = mend.train(model, tok, W, mend.MendConfig(steps=100), exclude_subjects={r.subject for r in reqs})
    emit("MEND-training", 100, time.perf_counter() - t, note="editor steps")
    start = time.perf_counter()
    for r in reqs:
        editor.edit(model, tok, r)
    emit("MEND", len(reqs), time.perf_counter() - start)
    g = grace.Grace(model, tok)
    g.calibrate([W.prompt(f.subject, f.relation) for f in W.facts_of(split="train")[:200]], share=0.25)
    start = time.perf_counter()
    for r in reqs:
        g.add(r)
    emit("GRACE", len(reqs), time.perf_counter() - start)
    g.remove()
    for n in args.memit_batches:
        batch = W.edit_requests(n, seed=1)
        start = time.perf_counter()
        memit.edit(model, tok, batch, covs={0: C}, prefixes=prefixes)
        seconds = time.perf_counter() - start
        emit("MEMIT-batch", n, seconds, edits_per_s=round(n / seconds, 3))
    if dev.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
