"""Execute every notebook at one run length and print one JSON line per notebook: mode, device,
wall seconds, peak resident memory of the kernel, peak GPU memory (if any).

    python benchmarks/run_notebooks.py                 # all notebooks, the default run
    python benchmarks/run_notebooks.py --mode full notebooks/01_learn_from_model.ipynb
    python benchmarks/run_notebooks.py --mode smoke    # the CI configuration
    LFMLAB_DEVICE=cpu python benchmarks/run_notebooks.py

Works on a CPU machine and on a GPU machine. These runs have no time budget.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from harness import discover, execute  # noqa: E402


class PeakMemory(threading.Thread):
    """Samples the RSS of this process's children (the kernel) and the GPU memory in use."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.stop, self.rss, self.gpu = every, threading.Event(), 0, 0
        self.smi = shutil.which("nvidia-smi")

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.wait(self.every):
            rss = 0
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            self.rss = max(self.rss, rss)
            if self.smi:
                out = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True).stdout.split()
                self.gpu = max(self.gpu, sum(int(x) for x in out if x.isdigit()))


MODES = {"smoke": {"SMOKE": True}, "default": {"SMOKE": False}, "full": {"SMOKE": False, "FULL": True}}


def main(paths: list[str], mode: str = "default", keep: str | None = None) -> int:
    import papermill

    from lfmlab import runtime

    notebooks = [Path(p).resolve() for p in paths] or discover()
    device = str(runtime.device())
    failures = 0
    for path in notebooks:
        monitor = PeakMemory()
        monitor.start()
        start = time.perf_counter()
        error = None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                declared = set(papermill.inspect_notebook(str(path)))   # widget apps have no FULL
                parameters = {k: v for k, v in MODES[mode].items() if k in declared}
                execute(path, Path(tmp), parameters=parameters, budget_s=float("inf"))
            except Exception as err:  # report and go on with the next notebook
                error = f"{type(err).__name__}: {str(err)[:300]}"
                failures += 1
            if keep:                                             # the executed notebook, errors included
                Path(keep).mkdir(parents=True, exist_ok=True)
                for done in Path(tmp).glob("*.ipynb"):
                    shutil.copy(done, Path(keep) / f"{done.stem}.{mode}.ipynb")
        monitor.stop.set()
        monitor.join()
        row = {"notebook": f"{path.parent.name}/{path.name}", "mode": mode, "device": device,
               "seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(monitor.rss / 2**20),
               "peak_gpu_mb": monitor.gpu if monitor.smi else None, "error": error}
        print(json.dumps(row), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="*", help="notebooks (default: every one)")
    parser.add_argument("--mode", choices=list(MODES), default="default",
                        help="run length: smoke (CI), default (what a learner gets) or full")
    parser.add_argument("--keep", metavar="DIR", help="copy each executed notebook (outputs, errors) to DIR")
    args = parser.parse_args()
    sys.exit(main(args.paths, args.mode, args.keep))
