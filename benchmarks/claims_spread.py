#!/usr/bin/env python3
"""Run notebooks in smoke mode over several seeds and print each claim's spread.

    python3 benchmarks/claims_spread.py 07_model_editing 03_database_augmentation --seeds 0 1 2 3 4

Each run writes the numbers its checks cell measured (``MEASURED_JSON``) to
``out/claims/<notebook>.seed<k>.json``; a failed run is reported and the rest go on. Prints one
JSON line per claim: its value at the first seed, min and max over the seeds, the threshold,
and how many seeds it held for. ``--record`` copies the first seed's numbers to
``tests/data/measured/``, the recorded run that ``tests/test_claims_fail_on_null.py`` reads.
"""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import execute  # noqa: E402

from lfmlab import claims as C  # noqa: E402

CLAIM_SETS = {  # notebook -> module with CLAIMS
    "02_model_tuning": "lfmlab.tuning.claims",
    "03_database_augmentation": "lfmlab.retrieval.claims",
    "04_model_distillation": "lfmlab.distill.claims",
    "05_model_reuse": "lfmlab.reuse.claims",
    "06_meta_learning": "lfmlab.meta.claims",
    "07_model_editing": "lfmlab.editing.claims",
    "08_knowledge_update_arena": "lfmlab.arena.claims",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", choices=sorted(CLAIM_SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--record", action="store_true", help="copy the first seed's numbers to tests/data/measured")
    ap.add_argument("--no-run", action="store_true", help="judge the numbers saved by an earlier run again")
    args = ap.parse_args()
    out = ROOT / "out" / "claims"
    for nb in args.notebooks:
        runs: dict[int, dict] = {}
        for seed in args.seeds:
            path = out / f"{nb}.seed{seed}.json"
            if args.no_run:
                if path.exists():
                    runs[seed] = json.loads(path.read_text())
                continue
            start = time.perf_counter()
            error = None
            try:
                execute(ROOT / "notebooks" / f"{nb}.ipynb", out / f"seed{seed}",
                        {"SMOKE": True, "SEED": seed, "MEASURED_JSON": str(path)})
            except Exception as err:  # noqa: BLE001  (a failed claim: keep going, report it)
                error = str(err).splitlines()[-1][:300] if str(err) else type(err).__name__
            print(json.dumps({"notebook": nb, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
                              "error": error}), flush=True)
            if path.exists():
                runs[seed] = json.loads(path.read_text())
        claims = importlib.import_module(CLAIM_SETS[nb]).CLAIMS
        for claim in C.select(claims, smoke=True)[0]:
            values = {s: claim.measure(m) for s, m in runs.items()}
            vs = [v for v, _ in values.values()]
            print(json.dumps({"notebook": nb, "claim": claim.text,
                              "seed0": values.get(args.seeds[0], (None,))[0],
                              "min": min(vs) if vs else None, "max": max(vs) if vs else None,
                              "threshold": sorted({round(b, 4) for _, b in values.values()}),
                              "held": sum(claim.holds(m) for m in runs.values()), "runs": len(runs)},
                             ensure_ascii=False), flush=True)
        first = out / f"{nb}.seed{args.seeds[0]}.json"
        if args.record and first.exists():
            dest = ROOT / "tests" / "data" / "measured" / f"{nb}.seed0.json"
            shutil.copy(first, dest)
            print(f"recorded {dest.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
