"""kNN-LM (Khandelwal et al. 2020): eq. 2 is a distribution over stored values, eq. 3 reduces to the
LM at λ = 0, the cached re-mix equals the one-prompt path, and facts put into the datastore are
answered (and forgotten again when removed) while the LM never changes."""
import pytest
import torch

from lfmlab.core import lm
from lfmlab.retrieval import datastore, knnlm
from lfmlab.retrieval.datastore import Neighbours


@pytest.fixture(scope="module")
def store(wlm, W):
    docs = [W.sentence(f, t) for f in W.facts_of("capital", "train")[:60] for t in range(2)]
    return datastore.build(wlm.model, wlm.tokenizer, docs)


@pytest.fixture(scope="module")
def held(W):
    return [f for f in W.facts_of("capital", "heldout")][:8]


def test_knn_distribution_is_a_distance_softmax_over_values():
    nb = Neighbours(torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([[0, 1, 2]]))
    values = torch.tensor([7, 3, 7])                          # two neighbours vote for token 7
    p = knnlm.knn_distribution(nb, values, vocab_size=10, temperature=1.0)[0]
    w = torch.softmax(torch.tensor([0.0, -1.0, -1.0]), 0)
    assert (
        torch.allclose(p[7], w[0] + w[2]) and torch.allclose(p[3], w[1]) and torch.isclose(p.sum(), torch.tensor(1.0))
    )
    hot = knnlm.knn_distribution(nb, values, 10, temperature=1e-3)[0]
    assert hot[7] > 0.999                                     # T -> 0: the nearest neighbour's token
    mixed = knnlm.interpolate(torch.full((1, 10), 0.1), p[None], 0.25)
    assert torch.allclose(mixed, 0.25 * p + 0.75 * 0.1) and torch.isclose(mixed.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="λ"):
        knnlm.interpolate(mixed, p[None], 1.5)


def test_lambda_zero_is_the_lm(wlm, store, W):
    facts = W.facts_of("capital", "train")[100:110]
    prompts, objs = [W.prompt(f.subject, f.relation) for f in facts], [f.object for f in facts]
    cache = knnlm.collect_pairs(wlm.model, wlm.tokenizer, store, prompts, objs, k_max=8)
    ref = lm.score(wlm.model, wlm.tokenizer, prompts, objs)
    assert torch.allclose(cache.sequence_logprob(0.0, 8, 1.0), ref.logprob, atol=1e-4)
    assert torch.equal(cache.exact(0.0, 8, 1.0), ref.exact)
    assert torch.allclose(cache.probs(0.4, 8, 5.0).sum(-1), torch.ones(cache.gold.shape[0]), atol=1e-5)


def test_the_cache_and_the_one_prompt_lookup_agree(wlm, store, W):
    prompt = W.prompt("Peru", "capital")
    cache = knnlm.collect_pairs(wlm.model, wlm.tokenizer, store, [prompt], ["Lima"], k_max=16)
    look = knnlm.lookup(wlm.model, wlm.tokenizer, store, prompt, k_max=16)
    _, p = look.mix(0.3, 8, 3.0)
    assert torch.allclose(p, cache.probs(0.3, 8, 3.0)[0], atol=1e-5)   # first object token
    rows = look.neighbours.index[0]
    assert torch.equal(look.values, store.values[rows])


def test_held_out_facts_in_the_store_are_answered_then_forgotten(wlm, store, W, held):
    docs = [W.sentence(f, t) for f in held for t in range(len(W.templates["capital"]["train"]))]
    prompts, objs = [W.prompt(f.subject, "capital") for f in held], [f.object for f in held]
    para = [W.prompt(f.subject, "capital", 0, "heldout") for f in held]
    params = {p: v.detach().clone() for p, v in wlm.model.named_parameters()}
    up = knnlm.knowledge_update(wlm.model, wlm.tokenizer, store, docs, prompts, objs, lam=0.5, k=8, temperature=10.0,
                                paraphrase_prompts=para, paraphrase_objects=objs)
    assert up.lm_alone.top1 <= 0.5                             # the LM does not know them
    assert up.added.top1 == 1.0 and up.added.object_perplexity < up.lm_alone.object_perplexity / 5
    assert up.paraphrase_added.top1 >= 0.75 > up.paraphrase_lm.top1
    assert up.restored and up.removed == up.before              # removing restores the kNN-LM exactly
    assert all(torch.equal(v, params[p]) for p, v in wlm.model.named_parameters())   # the LM is untouched


def test_sweep_finds_the_minimum_and_lambda_one_needs_neighbours(wlm, store, W):
    texts = [W.sentence(f, 0, "heldout") for f in W.facts_of("capital", "train")[:30]]
    cache = knnlm.collect_text(wlm.model, wlm.tokenizer, store, texts, k_max=16)
    sw = knnlm.sweep(cache, [0.0, 0.1, 0.5, 0.9], [1, 4, 16], temperature=10.0)
    assert sw.best_ppl == min(sw.ppl_lambda) and sw.ppl_lambda[0] == pytest.approx(sw.lm_ppl)
    assert len(sw.ppl_k) == 3 and sw.ppl_k[-1] == pytest.approx(sw.best_ppl)
    empty = knnlm.collect_text(wlm.model, wlm.tokenizer, store.copy(), texts[:3], k_max=4)
    empty_store = store.copy()
    empty_store.remove(empty_store.live_documents())
    none = knnlm.collect_text(wlm.model, wlm.tokenizer, empty_store, texts[:3], k_max=4)
    assert none.perplexity(0.9, 4, 1.0) == pytest.approx(empty.perplexity(0.0, 4, 1.0))   # no neighbour: p = p_LM


def test_generate_writes_a_stored_fact(wlm, store, W, held):
    f = held[0]
    s = store.copy()
    assert knnlm.generate(wlm.model, wlm.tokenizer, s, W.prompt(f.subject, "capital"), 0.0, 8, 10.0).strip() != f.object
    s.add(wlm.model, wlm.tokenizer, [W.sentence(f, t) for t in range(4)])
    out = knnlm.generate(wlm.model, wlm.tokenizer, s, W.prompt(f.subject, "capital"), 0.5, 8, 10.0)
    assert out.strip().rstrip(".") == f.object
