"""Merging operators on state dicts: identities, invariants and closed forms (lfmlab.reuse)."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch
from torch import nn

from lfmlab.core.state import (
    combine,
    flatten,
    merge_keys,
    same_state,
    state_of,
    swapped,
    task_vector,
    unflatten,
    with_state,
)
from lfmlab.reuse import (
    adamerging,
    dare,
    fisher,
    interpolate,
    lawa,
    regmean,
    soups,
    task_arithmetic,
    ties,
)
from lfmlab.zoo.digits import DigitsMLP


def mlp(seed: int, hidden=(16, 16), n_classes=4) -> DigitsMLP:
    torch.manual_seed(seed)
    return DigitsMLP(hidden, n_classes, in_features=8).eval()


def finetuned(base: nn.Module, seed: int, scale: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state_of(base).items()}


@pytest.fixture
def family():
    base = mlp(0)
    return base, state_of(base), [finetuned(base, s) for s in (1, 2, 3)]


# ---- state algebra --------------------------------------------------------------------------

def test_flatten_roundtrip_and_task_vector(family):
    _, pre, fts = family
    keys = merge_keys([pre, *fts])
    back = unflatten(flatten(fts[0], keys), fts[0], keys)
    assert all(torch.equal(back[k], fts[0][k]) for k in keys)
    tau = task_vector(fts[0], pre)
    assert torch.allclose(pre["head.bias"] + tau["head.bias"], fts[0]["head.bias"])


def test_merge_keys_refuses_other_architectures():
    with pytest.raises(ValueError, match="architecture"):
        merge_keys([state_of(mlp(0)), state_of(mlp(0, hidden=(8, 16)))])


def test_swapped_restores_and_with_state_copies(family):
    base, pre, fts = family
    x = torch.randn(5, 8)
    before = base(x).detach()
    with swapped(base, fts[0]):
        assert not torch.allclose(base(x), before)
    assert torch.equal(base(x), before)
    other = with_state(base, fts[1])
    assert other is not base and torch.equal(base(x), before)


# ---- merging identical models returns the same model ----------------------------------------

def test_every_operator_returns_the_model_when_merging_identical_models(family):
    base, pre, fts = family
    same = [fts[0]] * 3
    x = torch.randn(64, 8)
    results = {
        "uniform": interpolate.uniform_average(same).state,
        "weighted": interpolate.weighted_average(same, [0.2, 0.3, 0.5]).state,
        "lerp": interpolate.lerp(fts[0], fts[0], 0.3),
        "task arithmetic (λ = 1/n)": task_arithmetic.task_arithmetic(pre, same, 1 / 3).state,
        "TIES (density 1, λ = 1)": ties.ties_merging(pre, same, density=1.0, lam=1.0).state,
        "DARE (density 1, λ = 1/n)": dare.dare(pre, same, density=1.0, lam=1 / 3).state,
        "DARE-ties (density 1, λ = 1)": dare.dare(pre, same, density=1.0, lam=1.0, merge="ties").state,
        "Fisher": fisher.fisher_merging(same, [fisher.diagonal_fisher(with_state(base, fts[0]), x)] * 3).state,
        "RegMean": regmean.regmean(same, [regmean.gram_matrices(with_state(base, fts[0]), x)] * 3, alpha=0.7).state,
        "uniform soup": soups.uniform_soup(same).state,
        "greedy soup": soups.greedy_soup(same, lambda s: 0.5).state,
        "LAWA": lawa.lawa(same, k=3).state,
    }
    for name, state in results.items():
        assert same_state(state, fts[0], atol=1e-5), name
    # TIES keeps the trimmed entries of a lone task vector: with λ = 1 and density d it is trim(τ)
    out = ties.ties_merging(pre, same, density=0.5, lam=1.0).state
    tau = torch.cat([(fts[0][k] - pre[k]).flatten() for k in merge_keys([pre])])
    kept = torch.cat([(out[k] - pre[k]).flatten() for k in merge_keys([pre])])
    assert int((kept != 0).sum()) == int(0.5 * tau.numel())
    assert torch.allclose(kept[kept != 0], tau[kept != 0])


# ---- task arithmetic, TIES, DARE -------------------------------------------------------------

def test_task_arithmetic_is_eq_11_and_average_at_one_over_n(family):
    _, pre, fts = family
    out = task_arithmetic.task_arithmetic(pre, fts, [0.5, -1.0, 2.0]).state
    k = "features.0.weight"
    expected = pre[k] + 0.5 * (fts[0][k] - pre[k]) - (fts[1][k] - pre[k]) + 2.0 * (fts[2][k] - pre[k])
    assert torch.allclose(out[k], expected, atol=1e-6)
    avg = interpolate.uniform_average(fts).state
    assert same_state(task_arithmetic.task_arithmetic(pre, fts, 1 / 3).state, avg, atol=1e-6)
    neg = task_arithmetic.negation(pre, fts[0], 1.0).state
    assert torch.allclose(neg[k], 2 * pre[k] - fts[0][k], atol=1e-6)


def test_ties_resolves_sign_conflicts_by_mass():
    pre = {"w": torch.zeros(4)}
    fts = [{"w": torch.tensor([3.0, 1.0, -1.0, 0.0])}, {"w": torch.tensor([-1.0, 1.0, -2.0, 0.0])}]
    out = ties.ties_merging(pre, fts, density=1.0, lam=1.0).state["w"]
    # entry 0: +3 beats -1 -> only +3 kept; entry 1: both agree -> mean; entry 2: mean of the two; entry 3: 0
    assert torch.allclose(out, torch.tensor([3.0, 1.0, -1.5, 0.0]))


def test_dare_is_unbiased_and_sparse():
    pre = {"w": torch.zeros(20000)}
    ft = {"w": torch.full((20000,), 2.0)}
    out = dare.dare(pre, [ft], density=0.25, lam=1.0, seed=3).state["w"]
    assert abs(float((out != 0).float().mean()) - 0.25) < 0.02
    assert abs(float(out.mean()) - 2.0) < 0.1 and torch.allclose(out[out != 0], torch.tensor(8.0))


# ---- Fisher, RegMean, AdaMerging ------------------------------------------------------------

def test_fisher_merging_follows_the_confident_model():
    states = [{"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([3.0, 3.0])}]
    fishers = [{"w": torch.tensor([1.0, 100.0])}, {"w": torch.tensor([1.0, 0.01])}]
    out = fisher.fisher_merging(states, fishers).state["w"]
    assert torch.allclose(out[0], torch.tensor(2.0)) and abs(float(out[1]) - 1.0) < 1e-3


def test_true_fisher_matches_a_loop_over_classes():
    model = mlp(1, hidden=(6,), n_classes=3)
    x = torch.randn(7, 8)
    fast = fisher.diagonal_fisher(model, x, batch_size=4)
    slow = {k: torch.zeros_like(v) for k, v in model.named_parameters()}
    for xi in x:
        logp = torch.log_softmax(model(xi[None])[0], -1)
        for c in range(3):
            grads = torch.autograd.grad(logp[c], list(model.parameters()), retain_graph=True)
            for (k, _), g in zip(model.named_parameters(), grads):
                slow[k] += logp[c].exp().detach() * g.pow(2) / len(x)
    assert all(torch.allclose(fast[k], slow[k], atol=1e-6) for k in slow)
    emp = fisher.diagonal_fisher(model, x, y=torch.zeros(7, dtype=torch.long))
    assert emp.keys() == fast.keys()


def test_regmean_with_alpha_one_is_the_least_squares_solution():
    torch.manual_seed(0)
    states, grams, xs = [], [], []
    for i in range(3):
        layer = nn.Linear(5, 4)
        x = torch.randn(50, 5) * (i + 1)
        states.append({"lin.weight": layer.weight.detach(), "lin.bias": layer.bias.detach()})
        grams.append({"lin": x.T @ x / len(x)})
        xs.append(x)
    out = regmean.regmean(states, grams, alpha=1.0).state
    # min_W Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖² / N_i, solved by lstsq on the stacked (scaled) problems
    a = torch.cat([x / len(x) ** 0.5 for x in xs])
    b = torch.cat([x @ s["lin.weight"].T / len(x) ** 0.5 for x, s in zip(xs, states)])
    w = torch.linalg.lstsq(a, b).solution.T
    assert torch.allclose(out["lin.weight"], w, atol=1e-4)
    assert torch.allclose(out["lin.bias"], torch.stack([s["lin.bias"] for s in states]).mean(0))
    # alpha = 0 (diagonal Grams only) weighs each input dimension separately
    diag = regmean.regmean(states, grams, alpha=0.0).state["lin.weight"]
    d = torch.stack([torch.diagonal(g["lin"]) for g in grams])                  # [3, d_in]
    expected = sum(dd * s["lin.weight"] for dd, s in zip(d, states)) / d.sum(0)
    assert torch.allclose(diag, expected, atol=1e-5)


def test_gram_matrices_read_layer_inputs():
    model = mlp(2)
    x = torch.randn(10, 8)
    g = regmean.gram_matrices(model, x, ["features.0", "head"])
    assert torch.allclose(g["features.0"], x.T @ x / 10, atol=1e-5)
    h = model.features(x)
    assert torch.allclose(g["head"], h.T @ h / 10, atol=1e-5)


def test_adamerging_lowers_entropy_and_keeps_lambdas_in_range(family):
    base, pre, fts = family
    inputs = [torch.randn(40, 8) for _ in fts]
    out = adamerging.adamerging([base] * 3, pre, fts, inputs, steps=30, lr=0.05, init=0.3)
    lam = out.info["lambdas"]
    assert lam.shape == (3, len(merge_keys([pre]))) and float(lam.min()) >= 0 and float(lam.max()) <= 1
    assert float(out.info["entropy"][-5:].mean()) < float(out.info["entropy"][0])
    task_wise = adamerging.adamerging([base] * 3, pre, fts, inputs, granularity="task", steps=0, init=0.25)
    assert same_state(task_wise.state, task_arithmetic.task_arithmetic(pre, fts, 0.25).state, atol=1e-6)
    assert base.training is False and same_state(state_of(base), pre)


def test_weighted_average_rejects_negative_weights(family):
    _, _, fts = family
    with pytest.raises(ValueError, match="non-negative"):
        interpolate.weighted_average(fts, [1.0, -1.0, 1.0])
    assert same_state(combine(fts, [1.0, 0.0, 0.0]), fts[0])


def test_greedy_soup_never_keeps_a_harmful_ingredient():
    good, bad = {"w": torch.tensor([1.0])}, {"w": torch.tensor([-5.0])}
    score = lambda s: -abs(float(s["w"]) - 1.0)  # noqa: E731
    out = soups.greedy_soup([bad, good, good], score)
    assert out.info["kept"] == [1, 2] and float(out.state["w"]) == 1.0
