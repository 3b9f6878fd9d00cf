"""In-Context RALM (Ram et al. 2023): block scoring equals reading the passage and the prefix
directly; without a retriever it is the LM's own perplexity; bad settings and texts are refused."""
import math

import pytest
import torch
import torch.nn.functional as F

from lfmlab.retrieval import rag, ralm


class Fixed(rag.Retriever):
    """Always the first passage."""

    name = "fixed"

    def fit(self, passages):
        self.passages = list(passages)
        return self

    def scores(self, queries):
        s = torch.zeros(len(queries), len(self.passages))
        s[:, 0] = 1.0
        return s


@torch.no_grad()
def _nll(model, ids):
    logp = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return -logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_without_a_retriever_it_is_the_lms_own_perplexity(wlm, W):
    model, tok = wlm.model, wlm.tokenizer
    texts = [W.sentence(f, 0, "heldout") for f in W.facts_of(split="heldout")[:5]]
    for stride in (1, 3, 64):
        r = ralm.perplexity(model, tok, texts, None, ralm.RALMConfig(stride=stride))
        direct = torch.cat([_nll(model, list(tok(x)["input_ids"])) for x in texts])
        assert r.retrievals == 0 and r.tokens == len(direct)
        assert math.isclose(r.perplexity, math.exp(float(direct.mean())), rel_tol=1e-4)


def test_each_block_reads_its_passage_then_its_prefix(wlm, W):
    model, tok = wlm.model, wlm.tokenizer
    fact = W.facts_of(split="heldout")[0]
    text, passage = W.sentence(fact, 0, "heldout"), W.sentence(fact, 0)
    r = ralm.perplexity(model, tok, [text], Fixed().fit([passage]), ralm.RALMConfig(stride=3, query_tokens=4))
    ids = list(tok(text)["input_ids"])
    assert r.retrievals == len(range(4, len(ids), 3))               # every block after the first
    p_ids = list(tok(passage)["input_ids"])
    for b in range(4, len(ids), 3):                                   # block [b, b+3) with the passage in view
        e = min(b + 3, len(ids))
        seq = p_ids + ids[1:e]
        want = _nll(model, seq)[-(e - b):]
        assert torch.allclose(r.token_nll[0][b - 1:e - 1], want, atol=1e-4)
    mask = ralm.answer_mask(tok, text, fact.object)
    assert mask.any() and ralm.perplexity_on(r, [mask]) < ralm.perplexity_on(
        ralm.perplexity(model, tok, [text], None), [mask])


@pytest.mark.parametrize("kwargs,message", [({"stride": 0}, "stride = 0"), ({"query_tokens": 2.5}, "query_tokens"),
                                            ({"stride": True}, "stride = True")])
def test_bad_settings_say_what_to_choose(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ralm.RALMConfig(**kwargs)


def test_empty_texts_and_overlong_strides_are_refused(wlm, W):
    model, tok = wlm.model, wlm.tokenizer
    with pytest.raises(ValueError, match="no texts"):
        ralm.perplexity(model, tok, [], None)
    with pytest.raises(ValueError, match="text 1 is empty"):
        ralm.perplexity(model, tok, ["The capital of Peru is Lima.", "  "], None)
    long_passage = " ".join(["The capital of Peru is Lima."] * 20)
    with pytest.raises(ValueError, match="shorter stride"):
        ralm.perplexity(model, tok, [" ".join(["Peru is in South America."] * 6)], Fixed().fit([long_passage]),
                        ralm.RALMConfig(stride=16, query_tokens=4))
