"""The exercises and their checkers: every checker passes the reference, fails the unfilled stub,
and fails each plausible wrong answer with that mistake's own message; the notebooks build, run
(solutions: every check passes; students: every check says "not done yet") and stay in sync."""
import json
import time

import pytest
from harness import ROOT, execute

from lfmlab import exercises
from lfmlab.exercises import build
from lfmlab.exercises.masters import FILES, notebook
from lfmlab.exercises.quiz import QUIZZES

NAMES = exercises.names()
MISTAKES = [(n, m) for n in NAMES for m in exercises.get(n).mistakes]
EXERCISE_DIR = ROOT / "notebooks" / "exercises"


def test_there_are_exercises_in_every_section_notebook():
    per_section = {s: exercises.names(s) for s in exercises.SECTIONS}
    assert all(len(v) >= 3 for v in per_section.values()), per_section
    assert all(len(exercises.get(n).mistakes) >= 2 for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_passes_quickly(name, capsys):
    start = time.perf_counter()
    exercises.check(name, exercises.solution(name))
    assert capsys.readouterr().out.startswith(f"✓ {name}: correct on all")
    print(f"{name}: {time.perf_counter() - start:.2f} s")


@pytest.mark.parametrize("name", NAMES)
def test_the_unfilled_stub_is_not_done_yet(name):
    namespace = {}
    exec(exercises.get(name).source(solution=False), namespace)  # the student's cell, as built
    stub = namespace[exercises.get(name).function_name]
    with pytest.raises(AssertionError, match="not done yet"):
        exercises.check(name, stub)


@pytest.mark.parametrize("name,message", MISTAKES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MISTAKES)])
def test_each_plausible_wrong_answer_fails_with_its_own_message(name, message):
    with pytest.raises(AssertionError) as err:
        exercises.check(name, exercises.get(name).mistakes[message], quiet=True)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_the_master_solution_is_the_reference(name):
    """The solution written in the notebook (not only the package's reference) passes its check."""
    namespace = {}
    from lfmlab.exercises.masters import _imports

    exec(_imports(exercises.get(name).section, [name]), namespace)
    exec(exercises.get(name).source(solution=True), namespace)
    exercises.check(name, namespace[exercises.get(name).function_name], quiet=True)


def test_an_answer_that_is_simply_wrong_gets_the_case_and_the_error():
    with pytest.raises(AssertionError, match=r"wrong result on case 1 \(.*\): largest difference"):
        exercises.check("kd_loss", lambda student_logits, teacher_logits, temperature:
                        student_logits.sum() * 0 + 123.0, quiet=True)
    with pytest.raises(AssertionError, match="shape"):
        exercises.check("knn_interpolate", lambda p_lm, p_knn, lam: p_lm[:1], quiet=True)


def test_bad_calls_say_what_to_do():
    with pytest.raises(KeyError, match="exercises.names"):
        exercises.check("no_such_exercise", print)
    with pytest.raises(AssertionError, match="needs your function"):
        exercises.check("kd_loss", "kd_loss")
    with pytest.raises(ValueError, match="sections are"):
        exercises.names("99")


def test_quizzes_one_per_section_each_option_explained():
    from lfmlab.ui.quiz import QuizPanel

    assert set(QUIZZES) == set(exercises.SECTIONS)
    for quiz in QUIZZES.values():
        assert sum(o.correct for o in quiz.options) == 1 and all(o.why for o in quiz.options)
        panel = QuizPanel(quiz)
        right = next(o for o in quiz.options if o.correct)
        wrong = next(o for o in quiz.options if not o.correct)
        assert panel.answer(right.text) is True and right.why[:30] in panel.feedback.value.replace("&#x27;", "'")
        assert panel.answer(wrong.text) is False and "Not quite" in panel.feedback.value
        assert panel.answer(None) is None and "Pick an answer" in panel.feedback.value


def test_strip_solutions_keeps_the_indentation_and_rejects_broken_marks():
    text = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n"
    assert build.strip_solutions(text) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert build.drop_marks(text) == "def f(x):\n    return x\n"
    with pytest.raises(ValueError, match="never closed"):
        build.strip_solutions("### BEGIN SOLUTION\nx = 1\n")


def test_committed_masters_are_written_from_the_registry():
    for section, name in FILES.items():
        committed = json.loads((EXERCISE_DIR / name).read_text())
        made = notebook(section)
        assert [c["source"] for c in committed["cells"]] == [c["source"] for c in made["cells"]], (
            f"{name} differs from the registry: run `python -m lfmlab.exercises masters notebooks/exercises`")


def test_exercise_notebooks_keep_lines_short():
    long = [f"{p.name}: {line[:60]}" for p in EXERCISE_DIR.rglob("*.ipynb")
            for c in json.loads(p.read_text())["cells"] for line in "".join(c["source"]).split("\n")
            if len(line) > 100]
    assert not long, long


def test_committed_student_versions_equal_the_build(tmp_path):
    build.build(tmp_path)
    for name in FILES.values():
        built = (tmp_path / "student" / name).read_text()
        assert (EXERCISE_DIR / "student" / name).read_text() == built, (
            f"student/{name} is stale: run `python -m lfmlab.exercises build notebooks/exercises`")
        assert "### BEGIN SOLUTION" not in built and "raise NotImplementedError()" in built


def test_the_build_command_writes_both_versions(tmp_path):
    from lfmlab.exercises.__main__ import main

    assert main(["build", str(tmp_path)]) == 0
    assert len(list((tmp_path / "student").glob("*.ipynb"))) == len(FILES)
    assert "### BEGIN" not in (tmp_path / "solution" / FILES["04"]).read_text()
    assert main(["build", str(tmp_path), "--masters", str(tmp_path / "empty")]) == 2


def run_student(path):
    """Run All as nbclient (and JupyterLab) do: a cell tagged raises-exception does not stop the run
    (papermill stops on any error, so it cannot run a student version)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return json.loads(nbformat.writes(nb))


@pytest.mark.notebook
@pytest.mark.parametrize("name", list(FILES.values()))
def test_solution_and_student_notebooks_run(name, tmp_path):
    execute(EXERCISE_DIR / name, tmp_path / "solution", budget_s=60)
    student = run_student(EXERCISE_DIR / "student" / name)
    checks = [c for c in student["cells"] if "check" in c["metadata"].get("tags", [])]
    reports = ["".join(o.get("evalue", "")) for c in checks for o in c["outputs"] if o["output_type"] == "error"]
    assert len(reports) == len(checks) and all("not done yet" in r for r in reports), reports
    solved = json.loads((tmp_path / "solution" / name).read_text())
    passed = [o for c in solved["cells"] if "check" in c["metadata"].get("tags", [])
              for o in c["outputs"] if "✓" in "".join(o.get("text", ""))]
    assert len(passed) == len(checks)
