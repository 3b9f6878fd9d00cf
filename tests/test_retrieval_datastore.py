"""The kNN-LM datastore: keys are the frozen LM's context vectors, values the next tokens; exact
search (chunked torch) agrees with brute force and with faiss; add/remove round-trips exactly."""
import sys

import pytest
import torch

from lfmlab.data import world as world_data
from lfmlab.retrieval import datastore
from lfmlab.retrieval.datastore import FaissIndex, exact_search


@pytest.fixture(scope="module")
def docs():
    W = world_data.load()
    return [W.sentence(f, 0) for f in W.facts_of("capital", "train")[:40]]


@pytest.fixture(scope="module")
def store(wlm, docs):
    return datastore.build(wlm.model, wlm.tokenizer, docs)


def brute(queries, keys, k):
    d = torch.cdist(queries.double(), keys.double()) ** 2
    return d.topk(k, dim=1, largest=False)


def test_exact_search_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    keys, queries = torch.randn(103, 16, generator=g), torch.randn(11, 16, generator=g)
    want = brute(queries, keys, 7)
    for qc, kc in ((3, 5), (4, 1000), (512, 7)):          # chunks smaller than k, uneven, one block
        got = exact_search(queries, keys, 7, query_chunk=qc, key_chunk=kc)
        assert torch.equal(got.index, want.indices)
        assert torch.allclose(got.distance.double(), want.values, atol=1e-3)
    assert exact_search(queries, keys[:4], 10).index.shape == (11, 4)   # k is capped at N


def test_keys_are_final_norm_states_and_values_are_next_tokens(wlm, docs, store):
    tok = wlm.tokenizer
    lengths = [len(tok(d)["input_ids"]) for d in docs]
    assert len(store) == sum(n - 1 for n in lengths)         # one entry per position with a next token
    ids = torch.tensor([tok(docs[3])["input_ids"]])
    with torch.no_grad():
        h = wlm.model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]   # after ln_f [T, D]
    rows = (store.doc == 3).nonzero()[:, 0]
    assert torch.allclose(store.keys[rows], h[:-1], atol=1e-5)
    assert torch.equal(store.values[rows], ids[0, 1:])
    context, value = store.snippet(tok, int(rows[-1]))
    assert value == "." and context.endswith(world_data.load().facts_of("capital", "train")[3].object)


def test_a_stored_context_finds_itself(store):
    # the last context of a document (its whole sentence) is unique; early ones ("The capital of") are shared
    last = torch.stack([(store.doc == j).nonzero()[-1, 0] for j in (5, 20, 30)])
    found = store.search(store.keys[last], 3)
    assert found.distance[:, 0].max() < 1e-3 and torch.equal(found.index[:, 0], last)
    assert (found.distance[:, 1] > 1e-2).all()


def test_add_then_remove_restores_the_store_exactly(wlm, store):
    keys, values = store.keys.clone(), store.values.clone()
    ids = store.add(wlm.model, wlm.tokenizer, ["The capital of Belgium is Brussels."])
    n_added = len(store) - len(keys)
    assert n_added > 0 and store.find("The capital of Belgium is Brussels.") == ids
    assert store.remove(ids) == n_added
    assert torch.equal(store.keys, keys) and torch.equal(store.values, values)
    assert store.find("The capital of Belgium is Brussels.") == []


def test_bad_input_is_refused(wlm, store):
    with pytest.raises(ValueError, match="non-empty"):
        store.add(wlm.model, wlm.tokenizer, ["  "])
    with pytest.raises(ValueError, match="context vectors"):
        store.search(torch.zeros(2, 7), 3)
    with pytest.raises(ValueError, match="back-end"):
        store.use("annoy")


def test_faiss_missing_names_the_extra(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)           # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"\[faiss\]"):
        store.copy().use("faiss-flat")


def test_faiss_flat_and_full_probe_ivf_equal_exact(store):
    pytest.importorskip("faiss")
    queries = store.keys[::97] + 0.01
    exact = store.search(queries, 8)                          # the store has tied contexts: compare distances
    flat = store.copy().use("faiss-flat").search(queries, 8)
    assert torch.allclose(flat.distance, exact.distance, rtol=1e-3, atol=1e-3)
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(4000, 16, generator=g) + torch.randn(40, 16, generator=g).repeat(100, 1)   # 40 loose clusters
    q = keys[:50] + 0.1 * torch.randn(50, 16, generator=g)
    want = exact_search(q, keys, 10).index
    full = FaissIndex("ivf", nlist=16, nprobe=16).build(keys).search(q, 10)                         # all cells: exact
    assert torch.equal(full.index, want)
    few = FaissIndex("ivf", nlist=16, nprobe=1).build(keys).search(q, 10)  # one cell: approximate
    recall = (few.index[:, :, None] == want[:, None, :]).any(-1).float().mean()
    assert 0.3 < recall < 1.0


def test_copy_is_independent(wlm, store):
    other = store.copy()
    other.remove([0, 1])
    assert len(other) < len(store) and store.find(store.documents[0]) == [0]
