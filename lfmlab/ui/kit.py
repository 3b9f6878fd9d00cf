"""The notebook kit: what every section notebook does the same way.

* :func:`table` — a Markdown table in the notebook (rows of cells under a header);
* :func:`timed` — seconds per call of a function, after a warm-up, synchronised on a GPU;
* :func:`paired_verdict` — does a ≥ b hold over paired seeds, beyond 2 standard errors?
* :func:`show_source` — "open the box": the source of the function a cell just called.

The claim printer of the checks cells is :func:`lfmlab.claims.check`; the figures are in
:mod:`lfmlab.ui.plots`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import torch

__all__ = ["table", "markdown_table", "timed", "paired_verdict", "show_source"]


def markdown_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """``rows`` under ``header`` as a Markdown table (cells shown with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> None:
    """Show ``rows`` under ``header`` as a table in the notebook (plain text outside one)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(rows, header)))


def timed(fn: Callable[[], Any], repeats: int = 3, device: torch.device | str | None = None) -> tuple[Any, float]:
    """(the last result, mean seconds per call) of ``repeats`` calls of ``fn`` after one warm-up call
    (which builds caches and indices); on a CUDA ``device`` the GPU is synchronised before each clock."""
    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
    fn()
    sync()
    start = time.perf_counter()
    out = None
    for _ in range(max(1, int(repeats))):
        out = fn()
    sync()
    return out, (time.perf_counter() - start) / max(1, int(repeats))


def paired_verdict(a: Sequence[float], b: Sequence[float]) -> tuple[str, str]:
    """Whether a ≥ b holds over paired runs (the same seeds): the mean difference with its standard
    deviation and standard error, and "holds" (mean > 2 SE), "reversed" (mean < −2 SE) or a tie
    within noise. With one pair there is no noise estimate, and the verdict says so."""
    import numpy as np

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return f"{d[0]:+.4f}", ("holds" if d[0] >= 0 else "reversed") + " (1 seed: no noise estimate)"
    se = d.std(ddof=1) / np.sqrt(len(d))
    word = "holds" if d.mean() > 2 * se else ("reversed" if d.mean() < -2 * se else "tie, within noise (|Δ| ≤ 2 SE)")
    return f"{d.mean():+.4f} ± {d.std(ddof=1):.4f} (SE {se:.4f})", word


def show_source(*objects: Any) -> None:
    """Open the box: show the source of functions or methods as code, so the one-line call of a
    notebook can be read next to what it runs."""
    import inspect

    from IPython.display import Markdown, display

    for obj in objects:
        display(Markdown(f"`{obj.__module__}.{obj.__qualname__}`\n```python\n{inspect.getsource(obj)}```"))
