"""Every notebook is a test: it runs headless with smoke parameters, within its time budget,
and its checks cells assert the effects it teaches."""
import json
import re
import subprocess

import nbformat
import pytest
from harness import ROOT, dirty, discover, execute
from papermill.exceptions import PapermillExecutionError

NOTEBOOKS = discover()


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert "01_learn_from_model.ipynb" in names, names


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_notebook_smoke(path, tmp_path, notebook_durations):
    notebook_durations[f"{path.parent.name}/{path.name}"] = execute(path, tmp_path)


def test_committed_notebooks_are_clean():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    paths = {ROOT / t for t in tracked} | set(NOTEBOOKS)
    problems = {p.name: dirty(p) for p in paths if dirty(p)}
    assert not problems, f"notebooks must be committed clean, with a parameters cell: {problems}"


def _tiny_notebook(tmp_path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("SMOKE = False")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_harness_fails_on_a_broken_notebook(tmp_path):
    path = _tiny_notebook(tmp_path, "assert SMOKE is True\nraise RuntimeError('boom')")
    with pytest.raises(PapermillExecutionError, match="boom"):
        execute(path, tmp_path / "out")


def test_harness_rejects_an_unknown_parameter(tmp_path):
    path = _tiny_notebook(tmp_path, "print('fine')")
    with pytest.raises(ValueError, match="NOT_A_PARAMETER"):
        execute(path, tmp_path / "out", {"SMOKE": True, "NOT_A_PARAMETER": 1})


def test_harness_enforces_the_time_budget(tmp_path):
    from nbclient.exceptions import CellTimeoutError

    path = _tiny_notebook(tmp_path, "import time; time.sleep(4)")
    with pytest.raises((CellTimeoutError, PapermillExecutionError, AssertionError)):
        execute(path, tmp_path / "out", budget_s=1.0)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_every_notebook_declares_the_standard_parameters(path):
    """DESIGN.md §3: SMOKE, FULL, SEED and DEVICE in every section notebook, SMOKE and DEVICE in
    every widget app; declared so that papermill can parse them (an unparsable line disappears).
    A section notebook's header states the three run times (smoke, default, full)."""
    import papermill

    declared = set(papermill.inspect_notebook(str(path)))
    section = path.parent.name == "notebooks"
    required = {"SMOKE", "DEVICE"} | ({"SEED", "FULL"} if section else set())
    assert required <= declared, f"{path.name} declares {sorted(declared)}"
    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    assigned = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines()
                if line[:1].isalpha() and "=" in line}
    assert assigned <= declared, f"{path.name}: papermill cannot parse {sorted(assigned - declared)}"
    if section:
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        times = header[header.find("**Run time**"):]
        assert "**Run time**" in header and all(w in times for w in ("smoke", "default", "full")), (
            f"{path.name}: the header's **Run time** states the smoke, default and full run times")


PROCESS_WORDS = ("issue #", "feasibility", "closing note", "this session", "the author's machine", "TODO")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[f"{p.parent.name}/{p.name}" for p in NOTEBOOKS])
def test_notebook_lines_fit_in_100_characters_and_speak_of_the_method(path):
    """The anatomy rules a reader sees: no cell line over 100 characters (code and prose; a Markdown
    link definition, ``[name]: URL``, is exempt: a URL cannot be wrapped), and no words about how
    the notebook was made (issues, sessions, feasibility) instead of the method."""
    nb = json.loads(path.read_text())
    link = re.compile(r"^\[[\w-]+\]: https?://\S+$")
    long = [(i, len(line)) for i, c in enumerate(nb["cells"]) for line in "".join(c["source"]).splitlines()
            if len(line) > 100 and not link.match(line)]
    assert not long, f"{path.name}: (cell, length) of lines over 100 characters: {long}"
    text = "\n".join("".join(c["source"]) for c in nb["cells"]).lower()
    assert not [w for w in PROCESS_WORDS if w.lower() in text], path.name
