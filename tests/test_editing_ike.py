"""IKE (Zheng et al. 2023): the context it builds, its demonstrations never show the exam, the
wrapped model reads the context and forgets it on clear; and the shared read-after helper."""
import pytest
import torch

from lfmlab.core.lm import encode_prompt, pair_batch
from lfmlab.editing import ike, metrics
from lfmlab.editing.base import as_edit, read_after


@pytest.fixture(scope="module")
def reqs(W):
    return W.edit_requests(4, seed=7)


def test_the_context_fits_and_never_shows_the_exam(wlm, W, reqs):
    editor = ike.IKE(wlm.model, wlm.tokenizer, W, ike.IKEConfig(k=6, max_context=100))
    for r in reqs:
        ids, n = editor.context(as_edit(wlm.tokenizer, r))
        text = editor.text(ids)
        assert len(ids) <= 100 and n >= 1
        assert text.endswith(f"New Fact: {r.prompt} {r.target_new}. Prompt:")
        assert text.count("New Fact:") == n + 1
        demos = text.rsplit("New Fact:", 1)[0]
        assert r.subject not in demos                                   # other facts only
        assert not any(p in text for p in r.paraphrase_prompts)         # held-out templates never shown
    alone = ike.IKE(wlm.model, wlm.tokenizer, W, ike.IKEConfig(k=0))
    assert alone.context(as_edit(wlm.tokenizer, reqs[0]))[1] == 0


def test_read_after_equals_running_the_context_and_the_row(wlm):
    model, tok = wlm.model, wlm.tokenizer
    b = pair_batch(tok, ["The capital of Peru is", "The currency of Japan is the"], ["Lima", "Yen"], None)
    ctx = encode_prompt(tok, "The capital of Peru is Quito.")
    base = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    got = read_after(model, tok, [ctx, None], b.input_ids, b.attention_mask, base)
    assert torch.equal(got[1], base[1])                                 # no context: unchanged
    n = int(b.attention_mask[0].sum())
    seq = torch.tensor([ctx + b.input_ids[0, 1:n].tolist()])
    direct = model(input_ids=seq).logits[0, len(ctx) - 1:]
    assert torch.allclose(got[0, :n], direct, atol=1e-5)


def test_the_new_fact_in_context_edits_and_clear_forgets(wlm, W, reqs):
    model, tok = wlm.model, wlm.tokenizer
    editor = ike.IKE(model, tok, W, ike.IKEConfig(k=0))
    ref = metrics.reference(model, tok, reqs)
    before = metrics.evaluate(editor, tok, reqs, ref)        # empty memory: the base model
    assert before.efficacy == 0.0 and before.neighbourhood == 1.0
    editor.add(reqs[0])
    after = metrics.score_one(editor, tok, reqs[0], ref.neighbour_argmax[0], ref.same_subject_hit[0])
    assert after["efficacy"] == 1.0
    editor.clear()
    assert metrics.evaluate(editor, tok, reqs, ref).efficacy == 0.0


@pytest.mark.parametrize("kwargs,message", [({"k": -1}, "k = -1"), ({"k": 100}, "32 demonstrations"),
                                            ({"max_context": 2}, "max_context = 2")])
def test_bad_settings_say_what_to_choose(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ike.IKEConfig(**kwargs)
