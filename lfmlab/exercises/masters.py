"""The master exercise notebooks, written from the registry, so that a notebook's stubs, solutions
and checks are the registry's own (``python -m lfmlab.exercises masters DIR``; a test checks that
the committed masters equal what this writes)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from lfmlab.exercises import REGISTRY, SECTIONS
from lfmlab.exercises.build import _source, write

FILES = {"02": "02_model_tuning_exercises.ipynb", "03": "03_database_augmentation_exercises.ipynb",
         "04": "04_model_distillation_exercises.ipynb", "05": "05_model_reuse_exercises.ipynb",
         "06": "06_meta_learning_exercises.ipynb", "07": "07_model_editing_exercises.ipynb"}
SURVEY = {"02": "§2.1–2.2", "03": "§2.3", "04": "§3", "05": "§4", "06": "§5", "07": "§6"}
GOALS = {
    "02": ["write LoRA's low-rank path on GPT-2's Conv1D layout, with its α / r scale",
           "merge it into the frozen weight, and merge DoRA's magnitude-and-direction form",
           "predict, then check, that the merged and unmerged layers compute the same function"],
    "03": ["turn neighbour distances into a next-token distribution with a distance softmax",
           "mix it into the LM's distribution with λ, and weigh words with BM25 for retrieval",
           "predict what λ = 0 does to a fact that is in the datastore"],
    "04": ["write the distillation loss with temperature and see why it carries T²",
           "write DeepInversion's BatchNorm-statistics loss and GKD's generalised JSD",
           "predict, then measure, how the temperature scales the student's gradient"],
    "05": ["merge task vectors with TIES: trim, elect a sign, average the agreeing entries",
           "align hidden units with weight matching (a linear assignment); interpolate with SLERP",
           "predict, then check, the permutation symmetry that makes alignment necessary"],
    "06": ["compute ProtoNet's prototypes and its distance logits",
           "write MAML's exact meta-gradient with torch.func, and Reptile's first-order direction",
           "predict, then measure, how far the first-order approximation is from the exact gradient"],
    "07": ["write ROME's closed-form rank-one update from C⁻¹k*, v* and the residual",
           "solve MEMIT's least squares for many edits; score a target with the causal shift",
           "predict, then check, which keys a ROME edit leaves untouched"],
}
RUN = {
    "02": '''g = torch.Generator().manual_seed(SEED)
W0, b = torch.randn(16, 8, generator=g), torch.randn(8, generator=g)   # a Conv1D layer [in, out]
A, B = torch.randn(4, 16, generator=g), torch.randn(8, 4, generator=g)  # a trained LoRA, r = 4
x = torch.randn(5, 16, generator=g)
unmerged = exercises.solution("lora_forward")(x, W0, b, A, B, alpha=8.0)
merged = x @ exercises.solution("lora_merge")(W0, A, B, alpha=8.0) + b
print(f"largest difference, merged vs unmerged outputs: {(merged - unmerged).abs().max():.1e}")
''',
    "03": '''g = torch.Generator().manual_seed(SEED)
p_lm = torch.rand(2, 6, generator=g).softmax(-1)
p_knn = torch.zeros(2, 6)
p_knn[:, 3] = 1.0                     # the neighbours all say token 3: the fact in the datastore
for lam in (0.0, 0.25, 1.0):
    p = exercises.solution("knn_interpolate")(p_lm, p_knn, lam)
    print(f"λ = {lam:4.2f}: p(token 3) = {p[0, 3]:.3f} (the LM alone: {p_lm[0, 3]:.3f})")
''',
    "04": '''kd = exercises.solution("kd_loss")
g = torch.Generator().manual_seed(SEED)
student, teacher = torch.randn(64, 10, generator=g) * 3, torch.randn(64, 10, generator=g) * 3
print("  T   |grad| with T²   without T²")
for t in (1.0, 2.0, 5.0, 10.0):
    s = student.clone().requires_grad_()
    (kd(s, teacher, t) / t**2).backward()               # the loss without its T² factor
    print(f"{t:4.0f}   {s.grad.norm() * t**2:11.4f}   {s.grad.norm():10.5f}")
''',
    "05": '''g = torch.Generator().manual_seed(SEED)
W1, b1 = torch.randn(32, 8, generator=g), torch.randn(32, generator=g)   # hidden layer [32, in]
W2 = torch.randn(3, 32, generator=g)                                       # output layer [out, 32]
x = torch.randn(10, 8, generator=g)
perm = torch.randperm(32, generator=g)
out = torch.relu(x @ W1.T + b1) @ W2.T
permuted = torch.relu(x @ W1[perm].T + b1[perm]) @ W2[:, perm].T
print(f"largest difference after permuting the hidden units: {(out - permuted).abs().max():.1e}",
      "| allclose:", torch.allclose(out, permuted, atol=1e-5))
recovered = exercises.solution("weight_matching_layer")(W1, W1[perm])
found = bool((perm[recovered] == torch.arange(32)).all())
print("weight matching recovers the permutation:", found)
''',
    "06": '''def first_order(params, support_x, support_y, query_x, query_y, lr):
    """FOMAML: the same step, the inner gradient treated as a constant."""
    def loss(p, x, y):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()
    g = {k: v.detach() for k, v in grad(loss)(params, support_x, support_y).items()}
    return grad(lambda p: loss({k: p[k] - lr * g[k] for k in p}, query_x, query_y))(params)


g = torch.Generator().manual_seed(SEED)
scale = torch.tensor([0.5, 1.0, 3.0])                       # features of unequal size
task = dict(params={"w": torch.randn(3, 1, generator=g), "b": torch.zeros(1)}, lr=0.1,
            support_x=torch.randn(10, 3, generator=g) * scale,
            support_y=torch.randn(10, 1, generator=g),
            query_x=torch.randn(10, 3, generator=g) * scale,
            query_y=torch.randn(10, 1, generator=g))
exact, approx = exercises.solution("maml_meta_gradient")(**task), first_order(**task)
cos = torch.cosine_similarity(exact["w"].flatten(), approx["w"].flatten(), dim=0)
print(f"exact ∇w {exact['w'].flatten().tolist()}\\nFOMAML  {approx['w'].flatten().tolist()}")
ratio = exact["w"].norm() / approx["w"].norm()
print(f"cosine between them: {cos:.3f}, norm ratio exact/FOMAML: {ratio:.2f}")
''',
    "07": '''g = torch.Generator().manual_seed(SEED)
keys = torch.randn(200, 12, generator=g)
C = keys.T @ keys / 200                                     # the key covariance at the layer
W, b = torch.randn(12, 6, generator=g), torch.randn(6, generator=g)
k_star, v_star = torch.randn(12, generator=g), torch.randn(6, generator=g)
dW = exercises.solution("rome_rank_one")(W, b, C, k_star, k_star, v_star)
u = torch.linalg.solve(C, k_star)
other = torch.randn(12, generator=g)
other = other - (other @ u) / (u @ u) * u                   # k′ · C⁻¹k* = 0
print(f"edited key: |output − v*| = {(k_star @ (W + dW) + b - v_star).norm():.1e}")
print(f"key k′:     |output change| = {(other @ dW).norm():.1e}")
print(f"a random key: |output change| = {(torch.randn(12, generator=g) @ dW).norm():.2f}")
''',
}
STARS = {1: "★☆☆", 2: "★★☆", 3: "★★★"}


def _wrap(text: str, width: int = 100) -> str:
    """Markdown lines of at most ``width`` characters (tables and link definitions kept whole)."""
    out = []
    for line in text.split("\n"):
        if len(line) <= width or line.startswith("|"):
            out.append(line)
        else:
            out.append(textwrap.fill(line, width, break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": _source(_wrap(text))}


def _code(text: str, tags: tuple[str, ...] = (), nbgrader: dict | None = None) -> dict:
    meta = {"tags": list(tags)} if tags else {}
    if nbgrader is not None:   # nbgrader's cell metadata (schema 3): solution and autograded cells
        meta["nbgrader"] = {"schema_version": 3, "solution": False, "grade": False, "locked": False,
                            "task": False, **nbgrader}
    return {"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
            "source": _source(text.rstrip("\n"))}


def _imports(section: str, names: list[str]) -> str:
    """The imports the section's solutions and its run cell use (and no others: ruff reads notebooks)."""
    code = RUN[section] + "".join(REGISTRY[n].body for n in names)
    lines = ["import torch"]
    if "F." in code:
        lines.append("import torch.nn.functional as F  # noqa: F401  (for your solutions)")
    if "grad(" in code:
        lines.append("from torch.func import grad  # noqa: F401  (for your solutions)")
    return "\n".join(lines) + "\n"


def notebook(section: str) -> dict:
    names = [n for n, ex in REGISTRY.items() if ex.section == section]
    minutes = sum(REGISTRY[n].minutes for n in names)
    goals = "\n".join(f"{i}. {g}" for i, g in enumerate(GOALS[section], 1))
    table = "\n".join(f"| {i} | `{n}` | {REGISTRY[n].title} | {STARS[REGISTRY[n].difficulty]} | "
                      f"~{REGISTRY[n].minutes} min |" for i, n in enumerate(names, 1))
    cells = [
        _md(f"# {section} · Exercises: {SECTIONS[section]} (survey {SURVEY[section]})\n\n"
            f"Write the core step of each method yourself; a checker runs your function against "
            f"lfmlab's own implementation on several random cases and, when it disagrees, names the "
            f"mistake where it recognises one.\n\n**Learning goals**\n\n{goals}\n\n"
            f"**Time.** About {minutes} minutes of work. Running the notebook takes a few seconds "
            f"(smoke, default and full runs are the same: the checks use small random tensors).\n\n"
            f"| # | function | exercise | difficulty | time |\n|---|---|---|---|---|\n{table}\n\n"
            f"Each exercise: read the equation, fill in the function between the marks, run its "
            f"cell, then run the check below it. Two hints per exercise are folded under it: open "
            f"the first before the second. The section notebook `{section}` shows each method "
            f"at work on a real model."),
        _code('SMOKE = False   # the same as the default: the checks are already small\n'
              'SEED = 0\nDEVICE = "cpu"  # the checks run on small CPU tensors', ("parameters",)),
        _code(_imports(section, names) + "\nfrom lfmlab import exercises\n"
              "from lfmlab.exercises.quiz import quiz\nfrom lfmlab.ui.quiz import QuizPanel\n\n"
              "torch.manual_seed(SEED)\nprint(f'seed {SEED}, device {DEVICE}')"),
        _md("## Predict, then run\n\nPick an answer and press **Check**, then run the cell below "
            "it: it measures the answer."),
        _code(f'QuizPanel(quiz("{section}"))'),
        _code(RUN[section]),
    ]
    for i, name in enumerate(names, 1):
        ex = REGISTRY[name]
        hint1, hint2 = ex.hints
        cells += [
            _md(f"## {i}. {ex.title}\n\n**Difficulty** {STARS[ex.difficulty]} · **time** "
                f"~{ex.minutes} min\n\n$$\n{ex.equation}\n$$\n\nFill in `{ex.function_name}` "
                f"below (its docstring gives the shapes), run the cell, then run the check."),
            _code(ex.source(solution=True), nbgrader={"solution": True, "grade_id": f"{name}_solution"}),
            _md(f"<details><summary>Hint 1</summary>\n\n{hint1}\n\n</details>\n\n"
                f"<details><summary>Hint 2</summary>\n\n{hint2}\n\n</details>"),
            _code(f'exercises.check("{name}", {ex.function_name})', ("check",),
                  nbgrader={"grade": True, "locked": True, "points": ex.difficulty,
                            "grade_id": f"{name}_check"}),
        ]
    cells.append(_md("## What next\n\nEach function here is the heart of a method that notebook "
                     f"{section} runs on a real model: open it and find your function at work. "
                     "`exercises.solution(name)` returns lfmlab's reference implementation."))
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write_masters(folder: Path) -> list[Path]:
    paths = []
    for section, name in FILES.items():
        nb = notebook(section)
        for i, cell in enumerate(nb["cells"]):
            cell["id"] = f"{section}-{i:02d}"
        write(nb, Path(folder) / name)
        paths.append(Path(folder) / name)
    return paths
