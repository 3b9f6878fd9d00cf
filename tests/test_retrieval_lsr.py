"""REPLUG LSR (lfmlab.retrieval.lsr) on a toy knowledge base with the shipped world-lm and minilm."""

import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab import zoo
from lfmlab.retrieval import lsr, rag

PASSAGES = ["The capital of Peru is Lima.", "The language of Peru is Spanish.",
            "The capital of Chile is Santiago.", "The currency of Chile is the peso.",
            "The capital of Japan is Tokyo.", "The language of Japan is Japanese."]


@pytest.fixture(scope="module")
def parts():
    wlm, enc = zoo.load("world-lm", device="cpu"), zoo.load("minilm", device="cpu")
    return wlm.model, wlm.tokenizer, rag.DenseRetriever(enc.model, enc.tokenizer).fit(PASSAGES)


def test_untrained_lsr_retriever_is_the_dense_retriever(parts):
    _, _, dense = parts
    same = lsr.LSRRetriever(dense, torch.eye(dense.embeddings.shape[1]))
    q = ["The capital of Peru is", "What language do they speak in Japan?"]
    assert torch.allclose(same.scores(q), dense.scores(q), atol=1e-6)


def test_feedback_scores_every_retrieved_passage_and_lr0_is_the_null(parts):
    model, tok, dense = parts
    prompts, answers = ["The capital of Peru is", "The capital of Japan is"], ["Lima", "Tokyo"]
    idx, logp = lsr.lm_feedback(model, tok, dense, prompts, prompts, answers, k=3)
    assert idx.shape == logp.shape == (2, 3) and bool((logp <= 0).all())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    null = lsr.replug_lsr(model, tok, dense, prompts, prompts, answers, lsr.LSRConfig(k=3, lr=0.0, steps=3))
    assert torch.equal(null.retriever.A, torch.eye(dense.embeddings.shape[1]))
    trained = lsr.replug_lsr(model, tok, dense, prompts, prompts, answers, lsr.LSRConfig(k=3, lr=1e-2, steps=20))
    assert trained.losses[-1] < trained.losses[0]                     # the KL falls
    assert not torch.equal(trained.retriever.A, torch.eye(dense.embeddings.shape[1]))
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())   # the LM is only read


def test_kl_is_zero_when_the_retriever_already_agrees_with_the_lm():
    """KL(P_R ‖ Q) with P_R = Q is 0: the loss the module minimises, on a hand-made case."""
    q = torch.tensor([[0.7, 0.2, 0.1]])
    log = q.log()
    assert float((q * (log - log)).sum()) == 0.0


@pytest.mark.parametrize("bad", [dict(k=1), dict(steps=0), dict(gamma=0.0), dict(beta=float("nan")),
                                 dict(lr=-1.0), dict(lr=float("inf"))])
def test_bad_config_is_refused_with_a_message(bad):
    with pytest.raises(ValueError, match="LSR|temperature|learning rate"):
        lsr.LSRConfig(**bad)


def test_mismatched_inputs_are_refused(parts):
    model, tok, dense = parts
    with pytest.raises(ValueError, match="as many"):
        lsr.replug_lsr(model, tok, dense, ["a"], ["a", "b"], ["x"])
