"""Each claim of a notebook as a table row: seed-0 value, min-max over saved seeds, threshold, null.

    python3 benchmarks/claims_table.py 07_model_editing 02_model_tuning

Reads the numbers ``claims_spread.py`` saved under ``out/claims/`` (run that first) and computes
each claim's null method for real (``tests/null_methods_<area>.py``, as the null-method test
does), then prints one Markdown table per notebook: the rows a closing note reports.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


NULLS = {"02_model_tuning": "null_methods_tuning", "03_database_augmentation": "null_methods_retrieval",
         "04_model_distillation": "null_methods_distill", "05_model_reuse": "null_methods_reuse",
         "06_meta_learning": "null_methods_meta", "07_model_editing": "null_methods_editing",
         "08_knowledge_update_arena": "null_methods_arena"}


def fmt(x: float, spec: str) -> str:
    return "—" if not math.isfinite(x) else format(x, spec)


def table(notebook: str) -> str:
    module = importlib.import_module(NULLS[notebook])
    saved = sorted((ROOT / "out" / "claims").glob(f"{notebook}.seed*.json"),
                   key=lambda p: int(p.stem.rsplit("seed", 1)[1]))
    runs = {int(p.stem.rsplit("seed", 1)[1]): json.loads(p.read_text()) for p in saved}
    recorded = json.loads((ROOT / "tests" / "data" / "measured" / f"{notebook}.seed0.json").read_text())
    nulls = module.null_measured()
    lines = [f"**{notebook}** (smoke; seeds {', '.join(map(str, runs)) or 'none saved'})", "",
             "| claim | seed 0 | min–max | threshold | held | null |", "|---|---|---|---|---|---|"]
    for claim in module.CLAIMS:
        values = [claim.measure(m)[0] for m in runs.values()] if not claim.full_only else []
        held = sum(claim.holds(m) for m in runs.values()) if not claim.full_only else 0
        seed0 = claim.measure(runs[0])[0] if 0 in runs and not claim.full_only else float("nan")
        bound = claim.measure(runs.get(0, recorded))[1]
        finite = [v for v in values if math.isfinite(v)]
        span = f"{fmt(min(finite), claim.fmt)}–{fmt(max(finite), claim.fmt)}" if finite else "—"
        null = dict(recorded)
        for method in claim.about:
            null.update(nulls.get(method, {}))
        text = claim.text + (" (full run only)" if claim.full_only else "")
        lines.append(
            f"| {text} | {fmt(seed0, claim.fmt)} | {span} | {claim.op} {fmt(bound, claim.fmt)} | "
            f"{'—' if claim.full_only else f'{held}/{len(runs)}'} | {fmt(claim.measure(null)[0], claim.fmt)} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", choices=sorted(NULLS))
    for nb in ap.parse_args().notebooks:
        print(table(nb), "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
