"""Retrieval panels: the kNN panel re-mixes on a slider move without a new search, bad input changes
nothing, and the fact panel adds a fact (the answer changes) and removes it (the answer is back)."""
import pytest
import torch

from lfmlab.data import world as world_data
from lfmlab.retrieval import datastore
from lfmlab.ui.retrieval import FactPanel, KNNPanel


@pytest.fixture(scope="module")
def store(wlm):
    W = world_data.load()
    docs = [W.sentence(f, t) for f in W.facts_of("capital", "train")[:50] for t in range(2)]
    return datastore.build(wlm.model, wlm.tokenizer, docs)


def test_knn_panel_remixes_cached_neighbours(wlm, store, monkeypatch):
    panel = KNNPanel(wlm.model, wlm.tokenizer, store)
    look = panel.demo(prompt="The capital of Peru is", lam=0.0, k=8)
    assert panel.ok and look is panel.result and "next token" in panel.message
    assert "<td>" in panel.table.value and len(panel.figures[2].data[0].x) == panel.top
    lm_top = list(panel.figures[2].data[0].y)
    monkeypatch.setattr(store, "search", lambda *a, **k: pytest.fail("a slider move must not search"))
    panel.lam = 1.0                                             # re-mix: the neighbours alone
    assert panel.result is look and panel.ok
    p_knn, p = look.mix(1.0, 8, panel.temperature)
    assert torch.allclose(p, p_knn) and list(panel.figures[1].data[0].y) == list(panel.figures[2].data[0].y)
    assert panel.figures[0].data[0].y[0] == lm_top[0]          # the LM panel is unchanged


def test_knn_panel_bad_input_changes_nothing(wlm, store):
    panel = KNNPanel(wlm.model, wlm.tokenizer, store)
    look = panel.demo()
    for name, value, match in (("prompt", "   ", "empty"), ("temperature", 0.0, "positive"), ("k", 500, "choose")):
        old = getattr(panel, name)
        setattr(panel, name, value)
        panel.run()
        assert not panel.ok and match in panel.message and panel.result is look
        setattr(panel, name, old)


def test_fact_panel_adds_and_removes_knowledge(wlm, store):
    n = len(store)
    panel = FactPanel(wlm.model, wlm.tokenizer, store)
    added = panel.demo(subject="Belgium", relation="capital", object="Brussels", action="add", lam=0.5)
    assert added.lm_alone[0].rstrip(".") != "Brussels" and added.knn_lm[0].rstrip(".") == "Brussels"
    assert added.entries > 0 and len(store) == n                # the caller's store is untouched
    panel.run()                                                 # adding twice is refused
    assert not panel.ok and "already" in panel.message and panel.result is added
    removed = panel.demo(action="remove")
    assert removed.entries == added.entries and removed.knn_lm[0].rstrip(".") != "Brussels"
    assert len(panel.store) == n
    panel.run()                                                 # nothing left to remove
    assert not panel.ok and "Nothing to remove" in panel.message
