"""Binder installs lfmlab from pyproject.toml: no dependency list is copied by hand into binder/."""
from __future__ import annotations

import re

import tomllib
from harness import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_binder_requirements_hold_only_cpu_torch_and_the_ui():
    lines = [ln.strip() for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    packages = {_name(ln) for ln in lines if ln and not ln.startswith(("#", "-"))}
    assert packages == {"torch", "jupyterlab", "voila"}, packages
    assert "--index-url https://download.pytorch.org/whl/cpu" in lines      # the CPU build first


def test_postbuild_installs_lfmlab_with_its_dependencies_from_pyproject():
    script = (ROOT / "binder" / "postBuild").read_text()
    install = [ln for ln in script.splitlines() if ln.strip().startswith("pip install")]
    assert install == ['pip install -e ".[embed]"'], install          # with dependencies: no --no-deps
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "embed" in project["optional-dependencies"]
    torch_range = [d for d in project["dependencies"] if _name(d) == "torch"]
    assert torch_range == ["torch>=2.6"]                  # a range the CPU build from step 1 satisfies
