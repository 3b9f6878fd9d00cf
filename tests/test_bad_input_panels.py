"""Bad input on every panel, control by control, and every editor in every order.

The first test builds each of the eleven panels with a good first result, then gives each of its
controls the values no control may pass on (NaN, ±∞ and, where no such number makes sense, a
negative one; an empty and a control-character string). For each it checks that the value is
refused (by the trait itself, naming the trait and its bound, or by ``run()`` with the panel's
message), that nothing escaped into the kernel, that the panel still holds its last good result,
and that no model the panel holds changed (``torch.equal``).

The second test drives one editor panel through every ordered pair of its seven editors (an
Eulerian circuit of the complete directed graph: 43 edits) and checks after each edit and after
Reset that the shared model is the unedited one and that no memory editor keeps an edit.
"""
from __future__ import annotations

import math

import pytest
import torch
import traitlets
from torch import nn

import lfmlab  # noqa: F401

NAN, INF = float("nan"), float("inf")
FREE_TEXT = {"probe"}                 # the editor panel's probe box is not read by its run
NOT_BAD_INTS = {"seed", "task_seed", "episode_seed"}


def modules_of(panel) -> dict[str, nn.Module]:
    """Every model a panel holds (directly or in a dict of models)."""
    found = {}
    for name, value in vars(panel).items():
        if isinstance(value, nn.Module):
            found[name] = value
        elif isinstance(value, dict):
            found.update({f"{name}[{k}]": v for k, v in value.items() if isinstance(v, nn.Module)})
    return found


def snapshot(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in modules.items()}


def unchanged(modules, snap) -> bool:
    return all(torch.equal(snap[k][n], t) for k, m in modules.items() for n, t in m.state_dict().items())


def bad_values(trait: traitlets.TraitType, name: str) -> list:
    if isinstance(trait, traitlets.Float):
        return [NAN, INF, -INF]
    if isinstance(trait, traitlets.Int) and name not in NOT_BAD_INTS:
        return [-1]
    if name == "fact":                 # the arena's typed fact: empty means "draw the facts"
        return ["Pe\x00ru\x1b[2J", "Peru | capital | Qu\x00ito", "Atlantis | capital | Quito"]
    if isinstance(trait, traitlets.Unicode) and name not in FREE_TEXT:
        return ["", "Pe\x00ru\x1b[2J"]
    return []


@pytest.fixture(scope="module")
def panels(wlm, W):
    from lfmlab import zoo
    from lfmlab.data import digits as D
    from lfmlab.editing import Workbench, ft
    from lfmlab.meta import nets, sinusoid
    from lfmlab.retrieval import datastore, rag, ralm
    from lfmlab.reuse import taskpool
    from lfmlab.tuning import tasks
    from lfmlab.ui.arena import ArenaPanel
    from lfmlab.ui.distillation import DistillPanel
    from lfmlab.ui.editing import EditorPanel, TracePanel
    from lfmlab.ui.merging import InterpolationPanel, MergeBenchPanel
    from lfmlab.ui.meta import FewShotPanel, SinusoidPanel
    from lfmlab.ui.probe import ProbePanel
    from lfmlab.ui.retrieval import FactPanel, KNNPanel, RALMPanel
    from lfmlab.ui.tuning import TuningPanel
    from lfmlab.zoo import digits as Z
    from lfmlab.zoo import hub

    m, tok = wlm.model, wlm.tokenizer
    store = datastore.build(m, tok, [W.sentence(f, 0) for f in W.facts_of(split="train")[:30]])
    d = D.load("cpu")
    pool = taskpool.finetune_tasks(Z.load("digits-backbone")[0], tasks=["parity", "mod3"], epochs=1,
                                   device="cpu", progress=False)
    qa = tasks.world_qa(tok, max_subjects=12, seed=0, device="cpu")
    held = W.facts_of(split="heldout")[:4]
    texts = [W.sentence(f, 0, "heldout") for f in held]
    bm25 = rag.BM25Retriever().fit([W.sentence(f, 0) for f in W.facts_of(split="heldout")[:40]])
    built = {
        "probe": (ProbePanel(m, tok), {"prompt": "The capital of Peru is"}),
        "ralm": (RALMPanel(m, tok, {"bm25": bm25}, texts, [ralm.answer_mask(tok, x, f.object)
                                                             for x, f in zip(texts, held)]),
                 {"stride": 2, "query_tokens": 8}),
        "knn": (KNNPanel(m, tok, store), {"lam": 0.25, "k": 8}),
        "fact": (FactPanel(m, tok, store.copy()), {"subject": "Belgium", "object": "Brussels"}),
        "editor": (EditorPanel(m, tok, W, {"FT": lambda q: ft.edit(m, tok, q, ft.FTConfig(layer=0))}),
                   {"subject": "Peru", "new_object": "Quito", "method": "FT"}),
        "trace": (TracePanel(m, tok, W), {"samples": 1, "kind": "hidden"}),
        "interpolation": (InterpolationPanel({f"digits-mlp-{i}": Z.load(f"digits-mlp-{i}")[0]
                                              for i in range(2)}, d), {"points": 5}),
        "merge bench": (MergeBenchPanel(pool), {"method": "task arithmetic", "lam": 0.5}),
        "sinusoid": (SinusoidPanel({"a": sinusoid.model(seed=0, device="cpu")}),
                     {"k_shot": 5, "steps": 2, "lr": 0.01}),
        "few-shot": (FewShotPanel(d.test, finetune={"random": nets.classifier(4, seed=0, device="cpu")}),
                     {"learner": "random", "k_shot": 2, "n_query": 3, "steps": 2}),
        "tuning": (TuningPanel(hub.random_model("gpt2", seed=0), qa, batch_size=8, latency_rows=8),
                   {"method": "LoRA", "size": 2, "steps": 5}),
        "arena": (ArenaPanel(Workbench(m, tok, W, layer=0)), {"contestants": ["ROME", "RAG (BM25)"], "n": 2}),
        "distillation": (DistillPanel(zoo.load("digits-teacher").model.eval(), zoo.load("digits-student").model,
                                      (d.test.x[:64], d.test.y[:64])), {"synth_steps": 5, "student_steps": 10}),
    }
    for panel, demo in built.values():
        panel.demo(**demo)
    return {name: panel for name, (panel, _) in built.items()}


PANELS = ["probe", "knn", "fact", "ralm", "editor", "trace", "interpolation", "merge bench", "sinusoid",
          "few-shot", "tuning", "distillation", "arena"]


@pytest.mark.parametrize("name", PANELS)
def test_every_control_refuses_what_it_cannot_honour(panels, name):
    panel = panels[name]
    modules = modules_of(panel)
    snap = snapshot(modules)
    store = getattr(panel, "store", None)
    entries = len(store) if store is not None else None
    skipped = {"message", "ok", "busy", "result"}
    tried, problems = 0, []
    for trait_name, trait in sorted(panel.traits().items()):
        if trait_name in skipped or trait_name.startswith("_"):
            continue
        for value in bad_values(trait, trait_name):
            tried += 1
            old, last = getattr(panel, trait_name), panel.result   # restoring may run it again
            try:
                try:
                    setattr(panel, trait_name, value)
                except traitlets.TraitError as err:           # refused by the trait: names it and its bound
                    if trait_name not in str(err):
                        problems.append(f"{trait_name}={value!r}: trait error without the name: {err}")
                    continue
                out = panel.run()                              # must not raise
                if out is not None or panel.ok:
                    problems.append(f"{trait_name}={value!r} was accepted: {panel.message}")
                elif panel.result is not last:
                    problems.append(f"{trait_name}={value!r}: the last good result was replaced")
                elif "last good result" not in panel.message:
                    problems.append(f"{trait_name}={value!r}: the message does not say the result is the "
                                    f"last good one: {panel.message}")
            except Exception as err:                           # noqa: BLE001
                problems.append(f"{trait_name}={value!r} escaped: {type(err).__name__}: {err}")
            finally:
                setattr(panel, trait_name, old)
    assert tried >= 1
    assert not problems, "\n".join(problems)
    assert unchanged(modules, snap), f"{name}: a model changed"
    if store is not None:
        assert len(store) == entries
    if name == "fact":
        panel.action = "remove"                                    # the demo's fact is in the store
    assert panel.run() is not None and panel.ok, panel.message    # the good values still run


def test_panel_callbacks_never_raise(panels):
    """Slider observers and extra buttons run inside the panel's guard."""
    knn = panels["knn"]
    knn.top = -1                                                    # observed: redraws at once
    assert not knn.ok and "top = -1" in knn.message
    knn.top = 8
    assert knn.ok
    editor = panels["editor"]
    editor.probe = "The capital of\x00 Peru is"
    editor.probe_button.click()
    assert not editor.ok and "control characters" in editor.message
    editor.probe = "The capital of Peru is"
    editor.probe_button.click()
    assert "Peru" in editor.probe_out.value or editor.probe_out.value


def held_edits(editor) -> int:
    """How many edits a memory editor holds (GRACE's codebook keys, SERAC's memory)."""
    return len(editor.memory) if hasattr(editor, "memory") else len(editor.keys)


def _eulerian_circuit(n: int) -> list[int]:
    """A closed walk through every ordered pair (a, b), a ≠ b, of n nodes exactly once (Hierholzer)."""
    out = {a: [b for b in range(n) if b != a] for a in range(n)}
    stack, walk = [0], []
    while stack:
        a = stack[-1]
        if out[a]:
            stack.append(out[a].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def test_every_editor_in_every_order_leaves_the_model_unedited(wlm, W):
    from lfmlab import zoo
    from lfmlab.core import lm
    from lfmlab.editing import covariance, ft, grace, kn, memit, mend, rome, serac
    from lfmlab.ui.editing import EditorPanel

    model, tok = wlm.model, wlm.tokenizer
    cov = covariance.key_covariance(model, tok, 0)
    gr = grace.Grace(model, tok, grace.GraceConfig(layer=3, value_steps=20))
    gr.calibrate([W.prompt(f.subject, f.relation) for f in W.facts_of(split="train")[:40]], share=0.25)
    encoder = zoo.load("minilm")
    clf, _ = serac.train_scope(encoder, W, n_facts=60, steps=60)
    mend_editor = mend.Mend(model, mend.MendConfig(edit_layers=(0,)))   # untrained: one gradient step
    fast = rome.RomeConfig(layer=0, v_steps=5)
    editors = {
        "ROME": lambda q: rome.edit(model, tok, q, fast, cov=cov),
        "MEMIT": lambda q: memit.edit(model, tok, [q], memit.MemitConfig(edit_layers=(0,), v_steps=5),
                                      covs={0: cov}),
        "FT": lambda q: ft.edit(model, tok, q, ft.FTConfig(layer=0)),
        "KN": lambda q: kn.edit(model, tok, q),
        "MEND": lambda q: mend_editor.edit(model, tok, q),
        "SERAC": serac.Serac(model, tok, encoder, clf, counterfactual=model),
        "GRACE": gr,
    }
    names = list(editors)
    memories = [e for e in editors.values() if hasattr(e, "clear")]
    hooks = lambda: sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())  # noqa: E731
    snap, n_hooks = {n: p.detach().clone() for n, p in model.named_parameters()}, hooks()
    prompt = "The capital of Peru is"
    before = lm.top_k(model, tok, prompt, 5)
    panel = EditorPanel(model, tok, W, editors)
    panel.widget
    walk = _eulerian_circuit(len(names))
    assert len(walk) == len(names) * (len(names) - 1) + 1
    facts = [("Peru", "capital", "Quito"), ("Chile", "capital", "Lima"), ("Japan", "currency", "Euro")]
    pairs = set()
    for step, i in enumerate(walk):
        subject, relation, new = facts[step % len(facts)]
        panel.demo(subject=subject, relation=relation, new_object=new, method=names[i])
        assert all(torch.equal(snap[n], p) for n, p in model.named_parameters()), f"{names[i]} left weights"
        assert hooks() == n_hooks, f"{names[i]} left a hook on the model"
        held = [type(e).__name__ for e in memories if held_edits(e) and e is not editors[names[i]]]
        assert not held, f"after {names[i]}: {held} still hold an edit"
        assert lm.top_k(model, tok, prompt, 5) == before                  # the panel's "unedited" column
        if step:
            pairs.add((names[walk[step - 1]], names[i]))
    assert len(pairs) == len(names) * (len(names) - 1)
    panel.reset()
    assert "no edit is active" in panel.message
    assert not any(held_edits(e) for e in memories)
    assert lm.top_k(model, tok, prompt, 5) == before and hooks() == n_hooks
    assert all(math.isclose(a[1], b[1], rel_tol=1e-5) for a, b in zip(lm.top_k(gr, tok, prompt, 5), before))
