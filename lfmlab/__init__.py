"""lfmlab: learn from models — a teaching toolkit for the survey
"Learn From Model Beyond Fine-Tuning" (Zheng et al., Nat Mach Intell 2025).

Importing lfmlab does one thing on purpose: it sets ``OMP_WAIT_POLICY=PASSIVE`` (only if
unset) before torch is imported, because on a loaded 2-core machine spinning OpenMP threads
make small torch ops 5-10x slower. Import lfmlab before torch. Everything else is lazy.
"""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["runtime", "zoo", "data", "lm", "ui"]


def __getattr__(name: str):  # lazy submodules: `import lfmlab; lfmlab.zoo.load(...)`
    if name in __all__:
        return importlib.import_module(f"lfmlab.{name}")
    raise AttributeError(f"module 'lfmlab' has no attribute {name!r}")
