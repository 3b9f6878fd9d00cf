"""Every section notebook opens in Colab: a badge, and a first code cell that installs lfmlab only
when it is missing, never replaces Colab's torch or numpy, and turns on custom widgets there
(and does nothing anywhere else: the smoke runs of the notebooks execute it as well)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import types

import pytest
from harness import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))


def _cell(path):
    cells = json.loads(path.read_text())["cells"]
    return "".join(cells[1]["source"]), "".join(cells[0]["source"])


def test_every_section_notebook_has_the_same_colab_cell_and_its_badge():
    cells = {p.name: _cell(p) for p in NOTEBOOKS}
    assert len({code for code, _ in cells.values()}) == 1          # one cell, the same everywhere
    for name, (code, title) in cells.items():
        assert code.startswith("# In Colab only")
        assert f"[colab]: https://colab.research.google.com/github/lfmlab/lfmlab/blob/main/notebooks/{name}" in title
        assert "colab-badge.svg)][colab]" in title


@pytest.fixture
def colab(monkeypatch):
    """A stand-in ``google.colab`` whose widget switch is recorded, and a recorded ``pip``."""
    calls, widgets = [], []
    google = types.ModuleType("google")
    colab_mod = types.ModuleType("google.colab")
    colab_mod.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: widgets.append(True))
    google.colab = colab_mod
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_mod)

    def run(args, check=False, **kw):
        pins = open(args[args.index("-c") + 1]).read().split()
        calls.append((args, pins))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(subprocess, "run", run)
    return calls, widgets


def test_in_colab_without_lfmlab_it_installs_with_torch_and_numpy_pinned(colab, monkeypatch):
    calls, widgets = colab
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lfmlab" else real(name, *a))
    exec(_cell(NOTEBOOKS[0])[0], {})
    (args, pins), = calls
    assert args[:4] == [sys.executable, "-m", "pip", "install"]
    assert args[-1] == "lfmlab[embed] @ git+https://github.com/lfmlab/lfmlab"
    assert sorted(pins) == sorted(f"{p}=={importlib.metadata.version(p)}" for p in ("torch", "numpy"))
    assert widgets == [True]


def test_in_colab_with_lfmlab_it_installs_nothing_and_turns_on_widgets(colab):
    calls, widgets = colab
    exec(_cell(NOTEBOOKS[0])[0], {})                  # lfmlab is importable here
    assert calls == [] and widgets == [True]


def test_outside_colab_it_does_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run outside Colab"))
    exec(_cell(NOTEBOOKS[0])[0], {})
