"""RAG with a frozen LM: BM25 follows its formula, MiniLM retrieves by meaning, REPLUG with one
passage equals prepending it, and a retrieved passage lets world-lm answer a fact it never saw."""
import math

import pytest
import torch

from lfmlab import zoo
from lfmlab.retrieval import rag

PASSAGES = ["The capital of Belgium is Brussels.", "Belgium is a country in Europe.", "Japan is a country in Asia.",
            "The chemical symbol of Gold is Au.", "The currency code of Japan is JPY.",
            "The currency of Japan is called Yen."]


def test_bm25_matches_its_formula():
    r = rag.BM25Retriever(k1=1.2, b=0.75, device="cpu").fit(PASSAGES)
    s = r.scores(["the gold symbol"])[0]                     # "the" is a stop word
    assert int(s.argmax()) == 3
    n, lengths = len(PASSAGES), [len(rag.words(p)) for p in PASSAGES]
    avg = sum(lengths) / n
    idf = math.log1p((n - 1 + 0.5) / (1 + 0.5))                # "gold" and "symbol" occur in one passage each
    tf_part = 1 * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * lengths[3] / avg))
    assert s[3].item() == pytest.approx(2 * idf * tf_part, rel=1e-5)
    assert s[4].item() == 0.0                                 # no shared word


def test_recall_at_k():
    found = rag.Retrieved(torch.zeros(3, 3), torch.tensor([[4, 1, 2], [0, 5, 6], [7, 8, 9]]))
    assert rag.recall_at_k(found, [4, 5, 1], (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3),
                                                             3: pytest.approx(2 / 3)}


def test_dense_retrieval_understands_a_paraphrase():
    mini = zoo.load("minilm", device="cpu")
    r = rag.DenseRetriever(mini.model, mini.tokenizer).fit(PASSAGES)
    queries = ["What money does Japan use?", "Which element has the sign Au?"]
    found = r.search(queries, 2)
    assert found.index[0].tolist() in ([5, 4], [4, 5]) and found.index[1, 0] == 3   # currency; gold
    assert (found.score[:, 0] >= found.score[:, 1]).all() and found.score.abs().max() <= 1.0 + 1e-5
    lexical = rag.BM25Retriever(device="cpu").fit(PASSAGES).search(queries, 1)
    assert lexical.index[0, 0] == 2        # only "japan" matches: BM25 picks the shortest Japan passage


def test_replug_with_one_passage_equals_prepending(wlm, W):
    held = [f for f in W.facts_of("capital", "heldout") if f.subject != "Belgium"][:6]   # Belgium: 2 passages
    passages = [W.sentence(f, 1) for f in held] + PASSAGES
    prompts, answers = [W.prompt(f.subject, "capital") for f in held], [f.object for f in held]
    r = rag.BM25Retriever(device="cpu").fit(passages)
    pre = rag.answer(wlm.model, wlm.tokenizer, prompts, answers, r, k=1, mode="prepend")
    ens = rag.answer(wlm.model, wlm.tokenizer, prompts, answers, r, k=1, mode="ensemble")
    assert torch.equal(pre.exact, ens.exact) and torch.allclose(pre.logprob, ens.logprob, atol=1e-4)
    none = rag.answer(wlm.model, wlm.tokenizer, prompts, answers, mode="none")
    assert pre.accuracy >= 0.8 and none.accuracy <= 0.5        # the passage carries knowledge the LM lacks
    # two passages, one weight ~1: the mixture is the one-passage answer
    ens2 = rag.answer(wlm.model, wlm.tokenizer, prompts, answers, r, k=2, mode="ensemble", temperature=1e-4)
    assert torch.allclose(ens2.logprob, pre.logprob, atol=1e-3)


def test_bad_input_is_refused(wlm):
    r = rag.BM25Retriever(device="cpu")
    with pytest.raises(ValueError, match="fit"):
        r.search(["x"], 1)
    with pytest.raises(ValueError, match="mode"):
        rag.answer(wlm.model, wlm.tokenizer, ["a"], ["b"], r, mode="fusion")
    with pytest.raises(ValueError, match="retriever"):
        rag.answer(wlm.model, wlm.tokenizer, ["a"], ["b"], None, mode="prepend")
