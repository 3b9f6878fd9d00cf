"""Bad input never becomes a result (lfmlab.validate and the panels' guard).

Each case feeds one bad value to a public function or a panel and checks three things: the
message names what is wrong (and what is allowed), nothing changed (parameters, datastores and
panel results compared with ``torch.equal`` / identity), and no exception escaped a panel.
"""
import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab import validate
from lfmlab.core import lm
from lfmlab.retrieval import datastore, knnlm
from lfmlab.reuse import dare, interpolate, ties
from lfmlab.reuse import task_arithmetic as TA

NAN, INF = float("nan"), float("inf")


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def same(model, snap):
    return all(torch.equal(snap[n], p) for n, p in model.named_parameters())


# ---- the validation layer itself --------------------------------------------------------------

@pytest.mark.parametrize("value,lo,hi,words", [
    (NAN, 0, 1, "finite"), (INF, 0, 1, "finite"), (-INF, None, None, "finite"), (1.5, 0, 1, "outside [0, 1]"),
    (-0.1, 0, None, ">= 0"), ("0.5", 0, 1, "number"), (None, 0, 1, "number"), (True, 0, 1, "number"),
])
def test_numbers_must_be_finite_and_in_range(value, lo, hi, words):
    with pytest.raises(validate.BadValue, match="x = ") as err:
        validate.number("x", value, lo, hi)
    assert words in str(err.value)


@pytest.mark.parametrize("value,words", [
    ("", "empty"), ("   ", "empty"), ("Qu\x00ito", "control characters"), ("a\x1b[2Jb", "control characters"),
    ("tab\there", "control characters"), (3, "text"),
])
def test_text_must_be_plain_and_non_empty(value, words):
    with pytest.raises(validate.BadValue, match=words):
        validate.text("field", value)


def test_names_match_without_case_and_suggest_the_closest():
    assert validate.choice("subject", "fRANCE", ["France", "Peru"]) == "France"
    with pytest.raises(validate.BadValue, match="Did you mean 'France'"):
        validate.choice("subject", "Frnace", ["France", "Peru"])
    with pytest.raises(validate.BadValue, match="Choose one of: France, Peru"):
        validate.choice("subject", "Atlantis", ["France", "Peru"])
    with pytest.raises(validate.BadValue, match="empty"):
        validate.choice("subject", " ", ["France", "Peru"])


def test_empty_lists_are_empty_and_results_must_be_finite():
    with pytest.raises(validate.BadValue, match="empty"):
        validate.items("tasks", [])
    with pytest.raises(validate.NotFinite, match="not finite"):
        validate.finite("weights", {"w": torch.tensor([1.0, NAN])})
    validate.finite("weights", {"w": torch.ones(2)}, 1.0)


# ---- the LM helpers -------------------------------------------------------------------------

def test_over_long_and_control_character_prompts(wlm):
    model, tok = wlm.model, wlm.tokenizer
    long_prompt = "The capital of Peru is " * 60
    with pytest.raises(validate.BadValue, match="tokens long"):
        lm.greedy(model, tok, long_prompt)
    with pytest.raises(validate.BadValue, match="tokens long"):
        lm.top_k(model, tok, long_prompt)
    with pytest.raises(ValueError, match="control characters"):
        lm.encode_prompt(tok, "The capital of\x00 Peru is")
    with pytest.raises(ValueError, match="control characters"):
        lm.encode_target(tok, "Qu\x00ito\x07")


# ---- kNN-LM: one rule in every entry point ----------------------------------------------------

@pytest.fixture(scope="module")
def store(wlm, W):
    texts = [W.sentence(f, 0) for f in W.facts_of(split="train")[:30]]
    return datastore.build(wlm.model, wlm.tokenizer, texts)


@pytest.mark.parametrize("lam,k,t,words", [
    (NAN, 8, 10.0, "λ = nan"), (1.5, 8, 10.0, "outside [0, 1]"), (-0.1, 8, 10.0, "outside [0, 1]"),
    (0.5, 0, 10.0, "k = 0"), (0.5, 2.5, 10.0, "whole number"), (0.5, 8, 0.0, "T = 0"),
    (0.5, 8, -1.0, "T = -1"), (0.5, 8, INF, "finite"), (0.5, 8, NAN, "finite"),
])
def test_knn_settings_are_checked_in_every_entry_point(wlm, store, lam, k, t, words):
    look = knnlm.lookup(wlm.model, wlm.tokenizer, store, "The capital of Peru is", k_max=8)
    cache = knnlm.collect_pairs(wlm.model, wlm.tokenizer, store, ["The capital of Peru is"], ["Lima"], k_max=8)
    for call in (lambda: knnlm.settings(lam, k, t), lambda: look.mix(lam, k, t),
                 lambda: cache.perplexity(lam, k, t), lambda: knnlm.fact_scores(cache, lam, k, t)):
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
            call()


def test_datastore_refuses_unknown_ids_and_never_reuses_one(wlm, store):
    s = store.copy()
    keys, docs = s.keys.clone(), list(s.live_documents())
    with pytest.raises(ValueError, match="never added"):
        s.remove([999])
    assert torch.equal(s.keys, keys) and s.live_documents() == docs and not s.removed
    (new,) = s.add(wlm.model, wlm.tokenizer, ["The capital of Atlantis is Poseidonia."])
    assert new in s.live_documents() and s.find("The capital of Atlantis is Poseidonia.") == [new]
    s.remove([new])
    with pytest.raises(ValueError, match="already removed"):
        s.remove([new])


@pytest.mark.parametrize("texts,words", [(["  "], "non-empty"), (["Qu\x00ito is nice."], "control characters"),
                                         (["fine.", "\x07"], "control characters")])
def test_datastore_refuses_bad_text_and_adds_nothing(wlm, store, texts, words):
    s = store.copy()
    n = len(s)
    with pytest.raises(ValueError, match=words):
        s.add(wlm.model, wlm.tokenizer, texts)
    assert len(s) == n and len(s.documents) == len(store.documents)


# ---- panels: a message, nothing changed, nothing escapes --------------------------------------

@pytest.fixture(scope="module")
def knn_panel(wlm, store):
    from lfmlab.ui.retrieval import KNNPanel

    panel = KNNPanel(wlm.model, wlm.tokenizer, store)
    panel.demo(prompt="The capital of Peru is", lam=0.25, k=8)
    return panel


@pytest.mark.parametrize("name,value,words", [
    ("lam", NAN, "nan"), ("lam", 1.5, "outside [0, 1]"), ("temperature", 0.0, "T = 0"), ("temperature", NAN, "nan"),
    ("k", 500, "choose between 1 and"), ("prompt", "   ", "empty"), ("prompt", "Peru\x00 is", "control characters"),
    ("prompt", "The capital of Peru is " * 60, "tokens long"),
])
def test_knn_panel_refuses_bad_values(wlm, knn_panel, name, value, words):
    last, old, snap = knn_panel.result, getattr(knn_panel, name), snapshot(wlm.model)
    try:
        setattr(knn_panel, name, value)              # must not raise into the kernel
        knn_panel.run()
        assert not knn_panel.ok and words in knn_panel.message, knn_panel.message
        assert knn_panel.result is last and same(wlm.model, snap)
    finally:
        setattr(knn_panel, name, old)
    assert knn_panel.run() is not None and knn_panel.ok


def test_probe_panel_refuses_long_and_control_character_prompts(wlm):
    from lfmlab.ui.probe import ProbePanel

    panel = ProbePanel(wlm.model, wlm.tokenizer)
    last = panel.demo(prompt="The capital of Peru is")
    for prompt, words in (("The capital of Peru is " * 60, "tokens long"), ("Peru\x1b[2J", "control characters")):
        panel.prompt = prompt
        panel.run()
        assert not panel.ok and words in panel.message and panel.result is last


def test_fact_panel_refuses_a_control_character_object(wlm, store):
    from lfmlab.ui.retrieval import FactPanel

    panel = FactPanel(wlm.model, wlm.tokenizer, store)
    n = len(panel.store)
    panel.subject, panel.relation, panel.object, panel.action = "Belgium", "capital", "Qu\x00ito\x07", "add"
    assert panel.run() is None and not panel.ok and "control characters" in panel.message
    assert len(panel.store) == n and not panel.added


# ---- model reuse: NaN and ∞ never merge -------------------------------------------------------

@pytest.fixture
def states():
    g = torch.Generator().manual_seed(0)
    pre = {"w": torch.randn(4, 4, generator=g), "b": torch.randn(4, generator=g)}
    fts = [{k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in pre.items()} for _ in range(3)]
    return pre, fts


@pytest.mark.parametrize("call,words", [
    (lambda pre, fts: TA.task_arithmetic(pre, fts, NAN), "λ = nan"),
    (lambda pre, fts: TA.task_arithmetic(pre, fts, INF), "finite"),
    (lambda pre, fts: TA.task_arithmetic(pre, fts, [0.3, NAN, 0.3]), "λ[1]"),
    (lambda pre, fts: TA.task_arithmetic(pre, [], 0.3), "empty"),
    (lambda pre, fts: ties.ties_merging(pre, fts, 0.2, NAN), "λ = nan"),
    (lambda pre, fts: ties.ties_merging(pre, fts, 0.0, 1.0), "density = 0"),
    (lambda pre, fts: ties.ties_merging(pre, fts, 1.5, 1.0), "density = 1.5"),
    (lambda pre, fts: dare.dare(pre, fts, NAN, 0.3), "density = nan"),
    (lambda pre, fts: dare.dare(pre, fts, 0.3, INF), "λ = inf"),
    (lambda pre, fts: interpolate.lerp(fts[0], fts[1], NAN), "t = nan"),
    (lambda pre, fts: interpolate.weighted_average(fts, [1, NAN, 1]), "weights[1]"),
    (lambda pre, fts: interpolate.path_states(
        fts[0], fts[1], torch.tensor([0.0, NAN])), "not finite"),
])
def test_merges_refuse_nan_and_empty(states, call, words):
    pre, fts = states
    before = [{k: v.clone() for k, v in s.items()} for s in (pre, *fts)]
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        call(pre, fts)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(before, (pre, *fts)) for k in a)


# ---- distillation: loss weights -------------------------------------------------------------

@pytest.mark.parametrize("kw,words", [({"bn": NAN}, "bn weight = nan"), ({"ce": INF}, "ce weight = inf"),
                                      ({"tv": -1.0}, "must be >= 0")])
def test_distillation_loss_weights_must_be_finite_and_non_negative(kw, words):
    from lfmlab.distill import common, deepinversion

    with pytest.raises(ValueError, match=words):
        common.Weights(**kw)
    w = common.Weights(ce=1.0)
    for k, v in kw.items():
        setattr(w, k, v)                               # mutated after construction: still caught
    with pytest.raises(ValueError, match=words):
        deepinversion.DIConfig().with_weights(w)


def test_distillation_panel_refuses_a_nan_weight():
    from lfmlab import zoo
    from lfmlab.data import digits
    from lfmlab.ui.distillation import DistillPanel

    d = digits.load("cpu")
    student = zoo.load("digits-student").model
    snap = snapshot(student)
    p = DistillPanel(zoo.load("digits-teacher").model.eval(), student, (d.test.x[:64], d.test.y[:64]))
    p.widget
    p.bn = NAN
    assert p.run() is None and not p.ok and "nan" in p.message.lower() and p.result is None
    assert same(student, snap)


# ---- widget-level refusals become the panel's message -----------------------------------------

def test_a_dropdown_refusal_lists_the_choices_and_blocks_the_run():
    from lfmlab.data import digits as D
    from lfmlab.ui.merging import InterpolationPanel
    from lfmlab.zoo import digits as Z

    models = {f"digits-mlp-{i}": Z.load(f"digits-mlp-{i}")[0] for i in range(2)}
    panel = InterpolationPanel(models, D.load("cpu"))
    panel.widget
    panel.model_a = "digits-mlp-7"                          # not an option of the dropdown
    assert not panel.ok and "not one of the choices" in panel.message and "digits-mlp-0" in panel.message
    assert panel.run() is None and panel.result is None
    panel.model_a = "digits-mlp-0"
    assert panel._refused == {}
    panel.model_a = "digits-mlp-7"
    dropdown = panel.widget.children[1].children[0]
    dropdown.value = "digits-mlp-1"                         # the learner picks a valid one in the view
    dropdown.value = "digits-mlp-0"
    assert panel._refused == {} and panel.model_a == "digits-mlp-0"


# ---- model editing: the edit is validated once, and the model is never left edited ------------

@pytest.mark.parametrize("new_object,words", [("Qu\x00ito\x07\x1b[2J", "control characters"),
                                              ("Lima " * 100, "tokens long"), ("  ", "empty")])
def test_an_edit_with_a_bad_new_object_is_refused(wlm, W, new_object, words):
    from lfmlab.editing import base, ft

    snap = snapshot(wlm.model)
    try:
        request = W.edit_request("Peru", "capital", new_object)
    except ValueError as err:                        # the world refuses an empty object itself
        assert words in str(err) or "empty" in str(err)
        return
    with pytest.raises(base.BadRequest, match=words):
        ft.edit(wlm.model, wlm.tokenizer, request, ft.FTConfig(layer=0))
    assert same(wlm.model, snap)


@pytest.mark.parametrize("subject,words", [("Atlantis", "unknown subject"), ("Frnace", "did you mean 'France'"),
                                           ("", "empty")])
def test_unknown_subjects_name_the_closest(W, subject, words):
    with pytest.raises(KeyError, match=words):
        W.edit_request(subject, "capital", "Quito")
    assert W.edit_request("pERU ", "capital", "Quito").subject == "Peru"


def test_editor_panel_reset_undoes_every_method_and_a_new_panel_starts_clean(wlm, W):
    from lfmlab.core import lm
    from lfmlab.editing import ft, grace
    from lfmlab.ui.editing import EditorPanel

    model, tok = wlm.model, wlm.tokenizer
    snap, before = snapshot(model), lm.greedy(model, tok, "The capital of Peru is")
    gr = grace.Grace(model, tok, grace.GraceConfig(layer=3, value_steps=30))
    gr.calibrate([W.prompt(f.subject, f.relation) for f in W.facts_of(split="train")[:40]], share=0.25)
    editors = {"FT": lambda q: ft.edit(model, tok, q, ft.FTConfig(layer=0)), "GRACE": gr}
    panel = EditorPanel(model, tok, W, editors)
    panel.demo(subject="Peru", relation="capital", new_object="Quito", method="GRACE")
    assert "Quito" in lm.greedy(gr, tok, "The capital of Peru is")
    assert lm.greedy(model, tok, "The capital of Peru is") == before    # the zoo model itself: unedited
    panel.demo(subject="Chile", relation="capital", new_object="Lima", method="FT")
    assert len(gr.keys) == 0                                             # one edit at a time
    panel.reset()
    assert "no edit is active" in panel.message and same(model, snap)
    assert lm.greedy(gr, tok, "The capital of Peru is") == before
    gr.add(W.edit_request("Peru", "capital", "Quito"))                  # left in the memory by someone
    EditorPanel(model, tok, W, editors)                                 # a new panel clears it
    assert len(gr.keys) == 0 and same(model, snap)
    panel.subject = "Atlantis"
    last = panel.result
    assert panel.run() is None and "unknown subject" in panel.message and panel.result is last


# ---- model tuning: a diverged run is no result; a rank the layer cannot hold is refused -------

def test_a_diverged_tuning_run_says_so(wlm):
    from lfmlab.tuning import methods, tasks
    from lfmlab.tuning.train import TrainConfig

    snap = snapshot(wlm.model)
    task = tasks.world_qa(wlm.tokenizer, max_subjects=10, seed=0, device="cpu")
    with pytest.raises(validate.NotFinite, match="diverged|not finite"):
        methods.run("full fine-tuning", wlm.model, task.train,
                    config=TrainConfig(steps=3, lr=1e9, batch_size=8, seed=0, every=1))
    with pytest.raises(validate.BadValue, match="lr = nan"):
        methods.run("LoRA", wlm.model, task.train, config=TrainConfig(steps=3, lr=NAN, batch_size=8))
    assert same(wlm.model, snap)


def test_lora_rank_beyond_the_layer_is_refused(wlm):
    from lfmlab.tuning import lora

    snap = snapshot(wlm.model)
    with pytest.raises(ValueError, match="larger than this"):
        lora.add_lora(wlm.model, rank=500)
    assert same(wlm.model, snap)


# ---- devices: every loader says which devices exist ------------------------------------------

@pytest.mark.parametrize("device,words", [("tpu", "Unknown device 'tpu'"), ("cuda:99", "cuda:99"),
                                          ("mps", "mps")])
@pytest.mark.parametrize("loader", ["world-lm", "digits"])
def test_a_device_that_is_not_there_is_named(loader, device, words):
    from lfmlab import zoo
    from lfmlab.data import digits

    if device.startswith("cuda") and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("MPS is there")
    with pytest.raises(ValueError, match=words) as err:
        zoo.load("world-lm", device=device) if loader == "world-lm" else digits.load(device)
    assert "Use DEVICE='auto' or 'cpu'" in str(err.value) or "Use 'auto', 'cpu' or 'cuda'" in str(err.value)
