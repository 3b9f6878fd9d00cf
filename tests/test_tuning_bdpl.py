"""BDPL (lfmlab.tuning.bdpl): the simplex projection, the policy-gradient step, the equal budget of
its baseline, and bad input."""

import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab.tuning import bdpl, methods, tasks
from lfmlab.zoo import hub


@pytest.fixture(scope="module")
def tok():
    from lfmlab import zoo

    return zoo.load("world-lm", device="cpu").tokenizer


@pytest.fixture(scope="module")
def data(tok):
    pairs = [("Peru", "Lima"), ("Chile", "Santiago"), ("France", "Paris"), ("Japan", "Tokyo")]
    return tasks.LMData.build(tok, [f"The capital of {c} is" for c, _ in pairs], [a for _, a in pairs],
                              device="cpu")


def test_projection_lands_on_the_simplex_and_keeps_distributions():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(6, 10, generator=g, dtype=torch.float64) * 3
    p = bdpl.project_simplex(v)
    assert bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(6, dtype=torch.float64))
    q = torch.softmax(v, 1)
    assert torch.allclose(bdpl.project_simplex(q), q)          # already a distribution: unchanged
    # the Euclidean projection is the closest point: no random simplex point is closer
    for _ in range(50):
        r = torch.distributions.Dirichlet(torch.ones(10, dtype=torch.float64)).sample((6,))
        assert bool(((v - p) ** 2).sum(1).le(((v - r) ** 2).sum(1) + 1e-12).all())


def test_candidates_are_the_most_frequent_tokens(tok, data):
    c = bdpl.candidates(data, 5)
    assert len(c) == 5 and len(set(c.tolist())) == 5
    d = bdpl.domain_candidates(tok, ["Lima is big and Lima is old", "Lima"], 2)
    assert d[0].item() == tok(" Lima", add_special_tokens=False)["input_ids"][0] or \
        d[0].item() == tok(" is", add_special_tokens=False)["input_ids"][0]     # each twice, ahead of the rest
    assert len(d) == 2


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bdpl_and_random_prompts_spend_the_same_budget_without_gradients(arch, data):
    model = hub.random_model(arch, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(n_tokens=3, n_candidates=8, samples=4, steps=5, examples=4, seed=0)
    b = bdpl.bdpl(model, data, lr=1e-2, **kw)
    r = bdpl.random_prompts(model, data, **kw)
    assert b.info["calls"] == r.info["calls"] == 5 and b.info["evaluations"] == r.info["evaluations"] == 20
    assert b.info["sequences"] == r.info["sequences"] == 5 * 4 * 4
    assert b.trainable == 0 and len(b.losses) == 5
    probs = b.info["probs"]
    assert probs.shape == (3, 8) and torch.allclose(probs.sum(1), torch.ones(3, dtype=probs.dtype))
    assert not torch.allclose(probs, torch.full_like(probs, 1 / 8))  # the distributions moved
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    table = model.get_input_embeddings().weight
    assert torch.equal(b.model.source.weight, table[torch.tensor(b.info["tokens"])])  # a real token prompt


def test_a_step_lowers_the_probability_of_a_worse_than_average_token():
    """One update by hand: token 0 sampled with loss above the mean loses probability."""
    probs = torch.full((1, 4), 0.25, dtype=torch.float64)
    S = torch.tensor([[0], [1]])                                 # two samples: token 0, token 1
    L = torch.tensor([2.0, 1.0], dtype=torch.float64)
    adv = (L - L.mean()) / (len(L) - 1)
    grad = torch.zeros_like(probs).scatter_add_(1, S.T, adv[None] / probs.gather(1, S.T))
    new = bdpl.project_simplex(probs - 0.01 * grad)
    assert new[0, 0] < 0.25 < new[0, 1] and new[0, 2] == new[0, 3] == 0.25


@pytest.mark.parametrize("bad", [dict(samples=1), dict(steps=0), dict(lr=0.0), dict(lr=float("nan")),
                                 dict(n_candidates=1), dict(n_candidates=torch.tensor([0, 10 ** 9]))])
def test_bad_input_is_refused_with_a_message(bad, data):
    model = hub.random_model("gpt2", seed=1)
    kw = dict(n_tokens=2, n_candidates=4, samples=2, steps=1, examples=2, seed=0) | bad
    with pytest.raises(ValueError, match="BDPL|candidate|samples"):
        bdpl.bdpl(model, data, **kw)


def test_registered_as_a_gradient_free_input_method():
    spec = methods.METHODS["BDPL"]
    assert spec.run is bdpl.bdpl and not spec.gradients and spec.family == "input"
    assert "BDPL" in methods.tuners()                       # the tuning panel offers it
