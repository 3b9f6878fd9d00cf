"""The house rules of ``lfmlab``, read from the source (no imports run):

* layers point down: a method area imports the core floor, ``zoo``, ``data`` and itself, never
  another area and never ``ui``; the floor (``core``, ``zoo``, ``data`` and the top-level helpers)
  never imports a method area or ``ui``;
* no import circle between modules (function-level imports included);
* no module over 400 lines;
* what the core floor owns is not written again elsewhere: eval-mode and ``requires_grad``
  save/restore, cosine schedules, GPT-2 ``Conv1D`` checks, ``next(model.parameters()).device``;
* every area exposes ``METHODS``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lfmlab"
AREAS = ("tuning", "retrieval", "distill", "reuse", "meta", "editing")
FLOOR = ("core", "zoo", "data", "runtime", "progress", "validate", "claims")
TOP = ("ui",)
COMPOSE = ("arena", "exercises")  # above the areas, below ui (DESIGN.md §1)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every lfmlab module ``path`` imports. ``from a import b`` is an import of module a.b when b
    is a module, and of a itself otherwise (a name defined in a's ``__init__``)."""
    tree = ast.parse(path.read_text())
    pkg = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return {m for m in found if m in MODULES}


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lfmlab"


def _edges() -> dict[str, set[str]]:
    return {m: _imports(p) - {m} for m, p in MODULES.items()}


def test_layers_point_down():
    wrong = []
    for mod, targets in _edges().items():
        a = _area(mod)
        for t in targets:
            b = _area(t)
            if b == "lfmlab" or a == b:
                continue
            if a in AREAS and b not in FLOOR:
                wrong.append(f"{mod} -> {t} (an area imports only the floor and itself)")
            if a in FLOOR and b not in FLOOR:
                wrong.append(f"{mod} -> {t} (the floor imports no area and no ui)")
            if a in COMPOSE and b in TOP:
                wrong.append(f"{mod} -> {t} (the arena and the exercises sit below ui)")
    assert not wrong, "\n".join(sorted(wrong))


def test_core_is_the_bottom_floor():
    """``core`` imports only the top-level helpers and itself: zoo and data sit on top of it."""
    wrong = [f"{m} -> {t}" for m, ts in _edges().items() if _area(m) == "core"
             for t in ts if _area(t) not in ("core", "runtime", "progress", "validate", "lfmlab")]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = _edges()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("limit", [400])
def test_no_module_over_400_lines(limit):
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > limit}
    assert not long, f"modules over {limit} lines: {long}"


COPIES = {
    "eval mode saved and restored by hand (use core.params.evaluating / frozen)":
        r"\bwas(_training)?\s*=\s*[\w.]+\.training\b",
    "requires_grad saved and restored by hand (use core.params.frozen / trainable)": r"\[\s*p\.requires_grad for p in",
    "a cosine schedule written again (use core.schedules.cosine)": r"math\.cos\(math\.pi",
    "the GPT-2 Conv1D check written again (use zoo.layers.is_conv1d / as_weight_layout)": r"__name__ == \"Conv1D\"",
    "the device helper written again (use core.params.device_of)": r"next\([\w.]+\.parameters\(\)\)\.device",
}
OWNERS = {"core/params.py", "core/schedules.py", "zoo/layers.py"}


@pytest.mark.parametrize("what", list(COPIES))
def test_no_hand_written_copies(what):
    pattern = re.compile(COPIES[what])
    found = [f"{p.relative_to(ROOT)}:{i}" for p in ROOT.rglob("*.py") if str(p.relative_to(ROOT)) not in OWNERS
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, f"{what}: {found}"


@pytest.mark.parametrize("area", AREAS)
def test_every_area_exposes_its_registry(area):
    import dataclasses
    import importlib

    from lfmlab.core.registry import MethodInfo

    pkg = importlib.import_module(f"lfmlab.{area}")
    methods = pkg.METHODS
    assert methods and all(isinstance(m, MethodInfo) and m.name == name for name, m in methods.items())
    notebooks = {p.stem for p in (ROOT.parent / "notebooks").glob("*.ipynb")}
    for m in methods.values():
        assert callable(m.run) and m.module.startswith(f"lfmlab.{area}."), m
        assert m.config is None or dataclasses.is_dataclass(m.config), m
        assert m.notebook in notebooks and m.section.startswith("§") and m.summary and m.paper, m


def test_the_editing_panel_notebook_and_benchmark_read_one_registry():
    for path in ("notebooks/07_model_editing.ipynb", "widgets/editing.ipynb", "benchmarks/editing.py"):
        text = (ROOT.parent / path).read_text()
        assert "editing.editors(" in text and "editors = {" not in text, path
