"""One progress helper for the whole package.

In an interactive Jupyter session it is a tqdm widget bar; under papermill, CI, a terminal
or any headless run it prints plain lines (a few at most), so that executed notebooks and
CI logs stay readable. Method modules use it; it imports no widget library itself.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, Iterator


def headless() -> bool:
    """True under papermill/CI/terminal runs: no live frontend to draw widget bars in."""
    for var in ("LFMLAB_HEADLESS", "CI", "PAPERMILL_EXECUTION"):
        if os.environ.get(var, "").lower() in {"1", "true", "yes"}:
            return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or type(shell).__name__ != "ZMQInteractiveShell"


class PlainProgress:
    """A tqdm-like bar that prints a line every ``interval`` seconds and one at the end."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None,
                 desc: str = "", interval: float = 10.0, file=None, **_: Any):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.interval = total, desc, interval
        self.n, self.postfix, self.file = 0, "", file or sys.stdout
        self.start = self.last = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def _line(self, done: bool = False) -> str:
        elapsed = time.perf_counter() - self.start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = f" {self.postfix}" if self.postfix else ""
        word = "done " if done else ""
        return f"{self.desc + ': ' if self.desc else ''}{word}{count}{pct} in {elapsed:.1f}s{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            print(self._line(), file=self.file, flush=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if time.perf_counter() - self.start >= 2.0 or self.n:
                print(self._line(done=True), file=self.file, flush=True)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             disable: bool = False, **kwargs: Any):
    """A progress bar: ``for x in progress(xs, desc="train"): ...`` or ``with progress(total=n) as bar``.

    ``disable=True`` returns a silent bar (for inner loops and quick calls).
    """
    if disable:
        from tqdm import tqdm
        return tqdm(iterable, total=total, disable=True)
    if headless():
        return PlainProgress(iterable, total=total, desc=desc, **kwargs)
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, **kwargs)
