"""Transformer-Patcher (Huang et al. 2023): one neuron per edit in the last FFN, trained on cached
inputs; the base model never changes, the patch is quiet on memory text, clear removes them all."""
import pytest
import torch

from lfmlab.editing import metrics, tpatcher
from lfmlab.zoo.layers import layers


@pytest.fixture(scope="module")
def reqs(W):
    return W.edit_requests(3, seed=13)


def test_each_edit_adds_one_neuron_and_the_base_never_changes(wlm, W, reqs):
    model, tok = wlm.model, wlm.tokenizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    tp = tpatcher.TPatcher(model, tok, W, tpatcher.TPatcherConfig(seed=0))
    ref = metrics.reference(model, tok, reqs)
    for i, r in enumerate(reqs, start=1):
        info = tp.add(r)
        assert info["patches"] == i and tp.keys.shape == (i, layers(model).hidden)
        assert info["memory_firing"] < 0.01
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all((p.grad is None and grads[n] is None) or torch.equal(p.grad, grads[n])    # no gradient reached it
               for n, p in model.named_parameters())
    scores = metrics.evaluate(tp, tok, reqs, ref)
    assert scores.efficacy == 1.0 and scores.neighbourhood >= 0.8, scores
    tp.clear()
    assert len(tp.keys) == 0 and metrics.evaluate(tp, tok, reqs, ref).efficacy == 0.0


def test_the_patched_forward_adds_act_of_the_key_score_times_the_value(wlm, W):
    model, tok = wlm.model, wlm.tokenizer
    tp = tpatcher.TPatcher(model, tok, W)
    d = layers(model).hidden
    g = torch.Generator().manual_seed(0)
    tp.keys, tp.values = torch.randn(2, d, generator=g), torch.randn(2, d, generator=g)
    tp.biases = torch.randn(2, generator=g)
    q = torch.randn(5, d, generator=g)
    expected = tp.act(q @ tp.keys.T + tp.biases) @ tp.values
    assert torch.allclose(tp.patch_out(q), expected)
    ids = torch.tensor([tok("The capital of Peru is")["input_ids"]])
    assert not torch.allclose(tp(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.mark.parametrize("kwargs,message", [({"steps": 0}, "steps = 0"), ({"lr": float("nan")}, "lr = nan"),
                                            ({"act_margin": -5.0}, "must be below act_margin")])
def test_bad_settings_say_what_to_choose(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tpatcher.TPatcherConfig(**kwargs)
