"""Plot helpers: plotly FigureWidgets for live, interactive plots; matplotlib for static ones."""
from __future__ import annotations

from contextlib import contextmanager
from copy import deepcopy
from typing import Iterator, Sequence

import numpy as np


def sync(fig) -> None:
    """Store the figure as it is now in the widget's synced state.

    plotly's FigureWidget sends each change as a one-off message to the views that exist, and keeps
    the state a *new* view starts from (``_widget_data``, ``_widget_layout``) as it was when the
    figure was built. A view opened later (Voila renders after the cells ran; a reloaded page, a
    second ``display``) would then show the empty figure; this keeps that state current."""
    fig._widget_data = deepcopy(fig._data)
    fig._widget_layout = deepcopy(fig._layout)


@contextmanager
def updating(fig) -> Iterator:
    """``with updating(fig): ...``: plotly's ``batch_update``, then :func:`sync`."""
    with fig.batch_update():
        yield fig
    sync(fig)


def bar_widget(title: str = "", xlabel: str = "probability", height: int = 320):
    """A horizontal bar chart FigureWidget; update it with :func:`set_bars`."""
    import plotly.graph_objects as go

    fig = go.FigureWidget(go.Bar(x=[], y=[], orientation="h", marker_color="#4C78A8"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=30),
                      xaxis_title=xlabel, yaxis=dict(autorange="reversed", type="category"))
    return fig


def set_bars(fig, labels: Sequence[str], values: Sequence[float], title: str | None = None) -> None:
    with updating(fig):
        fig.data[0].x = list(values)
        fig.data[0].y = [repr(label)[1:-1] if label.strip() == label else f"'{label}'" for label in labels]
        if title is not None:
            fig.layout.title = title


def line_widget(names: Sequence[str], title: str = "", xlabel: str = "step", ylabel: str = "",
                height: int = 320, log_y: bool = False):
    """A FigureWidget with one (empty) line per name; extend it with :func:`set_line`."""
    import plotly.graph_objects as go

    fig = go.FigureWidget([go.Scatter(x=[], y=[], mode="lines+markers", name=n) for n in names])
    fig.update_layout(title=title, height=height, xaxis_title=xlabel, yaxis_title=ylabel,
                      margin=dict(l=10, r=10, t=40, b=30), yaxis_type="log" if log_y else "linear")
    return fig


def set_line(fig, i: int, xs: Sequence[float], ys: Sequence[float]) -> None:
    with updating(fig):
        fig.data[i].x, fig.data[i].y = list(xs), list(ys)


def heatmap(matrix: np.ndarray, xlabels: Sequence[str], ylabels: Sequence[str], title: str = "",
            ax=None, cmap: str = "Purples", colorbar: str = ""):
    """A static matplotlib heatmap (e.g. causal tracing: tokens x layers)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1 + 0.5 * len(xlabels), 0.5 + 0.35 * len(ylabels)))
    im = ax.imshow(np.asarray(matrix), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label=colorbar)
    return ax


def image_grid(images: np.ndarray, titles: Sequence[str] | None = None, ncols: int = 10, ax_size: float = 0.9):
    """A static grid of small grey images [N, H, W] (e.g. synthesised digits)."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * ax_size, nrows * ax_size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap="gray_r")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig
