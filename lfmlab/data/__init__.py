"""Datasets, all offline: ``world`` (real-world facts as text) and ``digits`` (scikit-learn's 8x8 digits)."""
from __future__ import annotations

import importlib

__all__ = ["world", "digits"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"lfmlab.data.{name}")
    raise AttributeError(f"module 'lfmlab.data' has no attribute {name!r}")
