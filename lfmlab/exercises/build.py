"""Build the student and solution versions of the exercise notebooks.

    python -m lfmlab.exercises build DIR              # DIR/student/*.ipynb and DIR/solution/*.ipynb
    python -m lfmlab.exercises build DIR --masters notebooks/exercises

The masters (``notebooks/exercises/NN_<section>_exercises.ipynb``) mark each solution as nbgrader
does, ``### BEGIN SOLUTION`` ... ``### END SOLUTION``, and carry nbgrader's cell metadata (solution
cells; each check a locked autograded cell), so nbgrader's ``generate_assignment`` reads them too
and writes the same student cells. The student version replaces every marked region with ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` at the region's indentation, clears outputs, and tags the check
cells ``raises-exception`` so that the notebook runs top to bottom, each check saying that its
exercise is not done yet. The solution version drops the marks.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_TAG = "check"
MASTERS = Path(__file__).resolve().parents[2] / "notebooks" / "exercises"


def _lines(source) -> list[str]:
    text = "".join(source) if isinstance(source, list) else source
    return text.split("\n")


def strip_solutions(text: str) -> str:
    """Every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` region -> the nbgrader stub."""
    out, inside = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError("a BEGIN SOLUTION inside another solution region")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif stripped == END:
            if not inside:
                raise ValueError("an END SOLUTION without its BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a BEGIN SOLUTION region is never closed")
    return "\n".join(out)


def drop_marks(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if line.strip() not in (BEGIN, END))


def _source(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def version(nb: dict, student: bool) -> dict:
    """The student (``student=True``) or solution version of the master notebook ``nb``."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if student and CHECK_TAG in tags and "raises-exception" not in tags:
                tags.append("raises-exception")
        if BEGIN in text or END in text:
            cell["source"] = _source(strip_solutions(text) if student else drop_marks(text))
    return nb


def write(nb: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def masters(folder: Path | None = None) -> list[Path]:
    folder = Path(folder) if folder is not None else MASTERS
    found = sorted(p for p in folder.glob("*_exercises.ipynb") if re.match(r"\d\d_", p.name))
    if not found:
        raise FileNotFoundError(f"no exercise masters (NN_<section>_exercises.ipynb) in {folder}; "
                                f"pass --masters with the folder that holds them")
    return found


def build(out_dir: Path, folder: Path | None = None) -> list[Path]:
    """Write ``out_dir/student/`` and ``out_dir/solution/``; return the written paths."""
    written = []
    for path in masters(folder):
        nb = json.loads(path.read_text())
        for kind in ("student", "solution"):
            target = Path(out_dir) / kind / path.name
            write(version(nb, student=kind == "student"), target)
            written.append(target)
    return written
