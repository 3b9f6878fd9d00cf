"""Load time of every zoo model (fresh process per model, so imports are counted once each),
plus the recipe times recorded on the cards. One JSON line per model.

    python benchmarks/zoo.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import lfmlab  # noqa: F401

CHILD = """
import time; t0 = time.perf_counter()
import lfmlab
from lfmlab import zoo, runtime
t1 = time.perf_counter()
m = zoo.load({name!r})
t2 = time.perf_counter()
m = zoo.load({name!r})
t3 = time.perf_counter()
import json
print(json.dumps({{"import_s": round(t1 - t0, 2), "first_load_s": round(t2 - t1, 2),
                  "second_load_s": round(t3 - t2, 3), "device": str(runtime.device())}}))
"""


def main() -> int:
    from lfmlab import zoo

    for name in zoo.names():
        out = subprocess.run([sys.executable, "-c", CHILD.format(name=name)], capture_output=True, text=True)
        if out.returncode:
            print(json.dumps({"model": name, "error": out.stderr.strip().splitlines()[-1]}))
            continue
        row = {"model": name, **json.loads(out.stdout.strip().splitlines()[-1])}
        card = zoo.card(name)
        row["recipe_s"] = card.recipe.get("train_seconds")
        row["parameters"] = card.parameters
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
