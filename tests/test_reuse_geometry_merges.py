"""SLERP, model stock, TSV-M and OT fusion: closed forms, invariants, and refusals (lfmlab.reuse)."""
import lfmlab  # noqa: F401

# isort: split
import math

import pytest
import torch

from lfmlab.core.state import same_state, state_of
from lfmlab.reuse import interpolate, model_stock, otfusion, rebasin, slerp, tsv
from lfmlab.zoo.digits import DigitsMLP

LAYERS = ["features.0", "features.2", "head"]


def mlp(seed: int, hidden=(16, 16), n_classes=4) -> DigitsMLP:
    torch.manual_seed(seed)
    return DigitsMLP(hidden, n_classes, in_features=8).eval()


# --- SLERP ------------------------------------------------------------------------------------

def test_slerp_ends_are_the_models_and_equal_norms_stay_on_the_sphere():
    a, b = {"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([0.0, 3.0])}
    assert torch.allclose(slerp.slerp(a, b, 0.0).state["w"], a["w"])
    assert torch.allclose(slerp.slerp(a, b, 1.0).state["w"], b["w"])
    for t in (0.25, 0.5, 0.8):
        mid = slerp.slerp(a, b, t).state["w"]
        assert float(mid.norm()) == pytest.approx(3.0, rel=1e-6)                   # on the arc
        assert math.degrees(math.atan2(mid[1], mid[0])) == pytest.approx(90 * t, abs=1e-4)
    chord = interpolate.lerp(a, b, 0.5)["w"]
    assert float(chord.norm()) == pytest.approx(3.0 * math.cos(math.radians(45)), rel=1e-6)


def test_slerp_falls_back_to_the_chord_for_nearly_parallel_tensors():
    a = {"w": torch.randn(50, generator=torch.Generator().manual_seed(0))}
    b = {"w": a["w"] * 1.5 + 1e-4}
    m = slerp.slerp(a, b, 0.3)
    assert m.info["fallback"] == 1
    assert torch.allclose(m.state["w"], interpolate.lerp(a, b, 0.3)["w"])


def test_slerp_path_keeps_the_norm_where_the_chord_shrinks():
    a, b = state_of(mlp(0)), state_of(mlp(1))
    ts = torch.linspace(0, 1, 9)
    arc = slerp.norm_ratio(slerp.path_states(a, b, ts), a, b)
    chord = slerp.norm_ratio(interpolate.path_states(a, b, ts), a, b)
    assert float(arc.min()) > 0.98 and float(chord[4]) < 0.85                 # random inits: ~90° apart
    p = slerp.path(mlp(0), a, b, torch.randn(32, 8), torch.randint(0, 4, (32,)), 5)
    assert p.kind == "SLERP" and len(p.loss) == 5 and torch.isfinite(p.loss).all()


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_slerp_refuses_bad_t(bad):
    a = state_of(mlp(0))
    with pytest.raises(ValueError, match="t"):
        slerp.slerp(a, a, bad)


def test_slerp_refuses_models_of_other_shapes():
    with pytest.raises(ValueError, match="same shapes"):
        slerp.slerp(state_of(mlp(0)), state_of(mlp(1, hidden=(16, 8))), 0.5,
                    keys=["features.2.weight"])


# --- model stock ------------------------------------------------------------------------------

def test_model_stock_ratio_is_eq_8():
    assert model_stock.ratio(0.5, 2) == pytest.approx(2 / 3)
    assert model_stock.ratio(1.0, 5) == pytest.approx(1.0)
    assert model_stock.ratio(0.0, 3) == pytest.approx(0.0)


def test_model_stock_on_agreeing_and_orthogonal_fine_tunes():
    w0 = {"w": torch.zeros(4)}
    same = [{"w": torch.tensor([1.0, 2, 0, 0])}] * 3
    assert torch.allclose(model_stock.model_stock(w0, same).state["w"], same[0]["w"])  # cos 1 -> the average
    ortho = [{"w": torch.tensor([1.0, 0, 0, 0])}, {"w": torch.tensor([0.0, 1, 0, 0])}]
    assert torch.allclose(model_stock.model_stock(w0, ortho).state["w"], w0["w"])      # cos 0 -> w_0


def test_model_stock_finds_the_centre_better_than_the_average_of_two():
    """The paper's geometry: w_i = w_0 + μ + ε_i with ε_i ⟂ μ, ε_i ⟂ ε_j, ‖ε_i‖ equal. Of all the
    points on the line from w_0 through the average of two, model stock's is the closest to the centre
    w_0 + μ, and closer than the average itself."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(400, 3, generator=g, dtype=torch.float64))
    mu, e1, e2 = 2.0 * q[:, 0], 3.0 * q[:, 1], 3.0 * q[:, 2]
    w0 = {"w": torch.zeros(400, dtype=torch.float64)}
    fts = [{"w": mu + e1}, {"w": mu + e2}]
    stock = model_stock.model_stock(w0, fts).state["w"]
    avg = interpolate.uniform_average(fts).state["w"]
    best = (avg @ mu) / (avg @ avg) * avg                                   # the projection of μ on the line
    assert torch.allclose(stock, best, atol=1e-9)
    assert float((stock - mu).norm()) < 0.75 * float((avg - mu).norm())


def test_model_stock_needs_two_models():
    w0 = state_of(mlp(0))
    with pytest.raises(ValueError, match="at least two"):
        model_stock.model_stock(w0, [state_of(mlp(1))])


# --- TSV-M ------------------------------------------------------------------------------------

def test_tsv_of_one_task_at_full_rank_is_the_fine_tuned_model():
    pre, ft = state_of(mlp(0)), state_of(mlp(1))
    merged = tsv.tsv_merge(pre, [ft], alpha=1.0, share=1.0)
    assert same_state(merged.state, ft, 1e-5)


def test_tsv_decorrelation_removes_the_interference_and_keeps_orthogonal_tasks():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    # two tasks in orthogonal subspaces: nothing to decorrelate, TSV-M = TSV-C = their sum
    d1 = q[:, :2] @ torch.diag(torch.tensor([3.0, 2.0])) @ q[:, 2:4].T
    d2 = q[:, 4:6] @ torch.diag(torch.tensor([2.5, 1.0])) @ q[:, 6:8].T
    merged, info = tsv.merge_layer([d1, d2], share=2 / 12)
    assert torch.allclose(merged, d1 + d2, atol=1e-5) and info["STI before"] < 1e-8
    # two overlapping tasks: interference before, none after
    d3 = torch.randn(12, 12, generator=g)
    d4 = d3 + 0.5 * torch.randn(12, 12, generator=g)
    _, info = tsv.merge_layer([d3, d4])
    assert info["STI before"] > 1.0 and info["STI after"] < 1e-8


def test_tsv_c_without_decorrelation_is_the_sum_of_low_rank_task_matrices():
    g = torch.Generator().manual_seed(1)
    ds = [torch.randn(10, 6, generator=g) for _ in range(3)]
    merged, info = tsv.merge_layer(ds, decorrelate=False)
    low = []
    for d in ds:
        u, s, vh = torch.linalg.svd(d)
        low.append(u[:, :2] @ torch.diag(s[:2]) @ vh[:2])
    assert info["k"] == 2 and torch.allclose(merged, sum(low), atol=1e-5)


def test_tsv_refuses_a_share_beyond_one_over_t():
    pre = state_of(mlp(0))
    with pytest.raises(ValueError, match="share"):
        tsv.tsv_merge(pre, [state_of(mlp(1)), state_of(mlp(2))], share=0.8)


# --- OT fusion --------------------------------------------------------------------------------

def permuted(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    perm = {"P_0": torch.randperm(16, generator=g), "P_1": torch.randperm(16, generator=g)}
    return rebasin.apply_permutation(rebasin.mlp_spec(LAYERS), perm, state)


@pytest.mark.parametrize("solver,cost", [("exact", "weights"), ("sinkhorn", "weights"), ("exact", "activations")])
def test_ot_fusion_of_a_model_with_its_permutation_gives_the_model_back(solver, cost):
    a = state_of(mlp(0))
    b = permuted(a, 1)
    x = torch.randn(256, 8)
    fused = otfusion.otfusion(a, b, LAYERS, solver=solver, eps=0.002, cost=cost, x=x)
    assert same_state(fused.state, a, 1e-3)
    naive = otfusion.otfusion(a, b, LAYERS, identity=True).state           # the null: no transport
    assert same_state(naive, interpolate.lerp(a, b, 0.5), 1e-6) and not same_state(naive, a, 1e-3)


def test_ot_plans_have_the_uniform_marginals():
    a, b = state_of(mlp(0)), state_of(mlp(1))
    for solver in ("exact", "sinkhorn"):
        for plan in otfusion.otfusion(a, b, LAYERS, solver=solver, eps=0.05).plans:
            assert torch.allclose(plan.sum(0), torch.full((16,), 1 / 16), atol=1e-4)
            assert torch.allclose(plan.sum(1), torch.full((16,), 1 / 16), atol=1e-4)


def test_exact_transport_between_layers_of_different_widths():
    g = torch.Generator().manual_seed(0)
    plan = otfusion.exact_transport(torch.rand(6, 4, generator=g))
    assert torch.allclose(plan.sum(1), torch.full((6,), 1 / 6), atol=1e-8)
    assert torch.allclose(plan.sum(0), torch.full((4,), 1 / 4), atol=1e-8)


def test_ot_fusion_refuses_bad_settings():
    a = state_of(mlp(0))
    with pytest.raises(ValueError, match="solver"):
        otfusion.otfusion(a, a, LAYERS, solver="hungarian")
    with pytest.raises(ValueError, match="inputs"):
        otfusion.otfusion(a, a, LAYERS, cost="activations")
    with pytest.raises(KeyError, match="features.9"):
        otfusion.otfusion(a, a, ["features.9", "head"])
