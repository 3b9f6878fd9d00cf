"""The widget runtime under the panels' charts: plotly's FigureWidget runs on anywidget.

anywidget 0.9.17 and later give each widget model 2 s to load and initialise its JavaScript; a
model that takes longer never becomes ready, and every later message from the kernel to it is
dropped without a word. plotly's FigureWidget sends its whole 3.6 MB bundle with each figure and the
browser compiles it once per figure, about a second each on a 2-core machine: in the merging app
(three figures) the third chart drew once and then never redrew, in about two page loads out of
three. lfmlab pins ``anywidget<0.9.17`` (pyproject.toml); these tests fail if an installed
anywidget has the limit again, before the browser tests meet it as a flaky chart.
"""
from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from harness import ROOT

LIMIT = "Failed to initialize model"     # the error that anywidget's 2-s limit raises


def _labextension_files() -> list[Path]:
    from jupyter_core.paths import jupyter_path

    found = []
    for base in jupyter_path("labextensions"):
        found += sorted((Path(base) / "anywidget" / "static").glob("*.js"))
    return found


def test_the_installed_anywidget_waits_for_a_slow_model():
    files = _labextension_files()
    assert files, "anywidget's JupyterLab extension is not installed: `python3 dev.py setup`"
    limited = [f.name for f in files if LIMIT in f.read_text(errors="replace")]
    assert not limited, (f"anywidget {version('anywidget')} drops the updates of a widget model that "
                         f"loads in over 2 s ({limited}): install anywidget<0.9.17")


def test_the_project_pins_anywidget_below_the_limit():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"anywidget>=0.9,<0.9.17"' in text
