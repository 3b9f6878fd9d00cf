"""Mode connectivity, Git Re-Basin and ZipIt on small MLPs (lfmlab.reuse)."""
import lfmlab  # noqa: F401

# isort: split
import torch

from lfmlab.core.state import same_state, state_of, with_state
from lfmlab.reuse import connectivity, rebasin, zipit
from lfmlab.zoo.digits import DigitsMLP

LAYERS = ["features.0", "features.2", "head"]


def mlp(seed: int) -> DigitsMLP:
    torch.manual_seed(seed)
    return DigitsMLP((12, 10), 3, in_features=6).eval()


def permuted(state, seed=0):
    g = torch.Generator().manual_seed(seed)
    perm = {"P_0": torch.randperm(12, generator=g), "P_1": torch.randperm(10, generator=g)}
    return rebasin.apply_permutation(rebasin.mlp_spec(LAYERS), perm, state), perm


def test_a_permutation_keeps_the_function():
    model = mlp(0)
    x = torch.randn(20, 6)
    state, _ = permuted(state_of(model))
    assert not same_state(state, state_of(model))
    assert torch.allclose(with_state(model, state)(x), model(x), atol=1e-6)


def test_weight_matching_undoes_a_known_permutation():
    model = mlp(1)
    a = state_of(model)
    b, _ = permuted(a, seed=3)
    found = rebasin.weight_matching(rebasin.mlp_spec(LAYERS), a, b)
    assert same_state(found.state, a, atol=1e-6) and found.sweeps >= 1


def test_activation_matching_undoes_a_known_permutation():
    model = mlp(2)
    a = state_of(model)
    b, _ = permuted(a, seed=4)
    x = torch.randn(200, 6)
    found = rebasin.activation_matching(
        model, rebasin.mlp_spec(LAYERS), a, b, x, {"P_0": "features.1", "P_1": "features.3"}
    )
    # units that never fire on x may be matched arbitrarily; the function must be A's either way
    assert torch.allclose(with_state(model, found.state)(x), model(x), atol=1e-5)


def test_the_path_between_a_model_and_its_permutation():
    model = mlp(3)
    a = state_of(model)
    b, _ = permuted(a, seed=5)
    x, y = torch.randn(100, 6), torch.randint(0, 3, (100,))
    same = connectivity.linear_path(model, a, a, x, y, points=5)
    assert abs(same.loss_barrier) < 1e-6 and float(same.loss.std()) < 1e-6
    aligned = rebasin.weight_matching(rebasin.mlp_spec(LAYERS), a, b).state
    assert connectivity.linear_path(model, a, aligned, x, y, points=5).loss_barrier < 1e-5
    path = connectivity.linear_path(model, a, b, x, y, points=5)
    assert torch.allclose(path.loss[[0, -1]], same.loss[[0, -1]], atol=1e-5)   # endpoints: one function


def test_barrier_definition():
    t = torch.linspace(0, 1, 5)
    assert connectivity.barrier(t, torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0])) == 2.0
    assert abs(connectivity.barrier(t, torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))) < 1e-6


def test_bezier_curve_keeps_endpoints_and_lowers_the_midpoint_loss():
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    a, b = mlp(4), mlp(5)
    for m in (a, b):
        opt = torch.optim.Adam(m.parameters(), lr=0.03)
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        m.eval()
    sa, sb = state_of(a), state_of(b)
    curve = connectivity.bezier_curve(a, sa, sb, x, y, steps=150, lr=0.02, seed=0)
    assert same_state(curve.point(0.0), sa, atol=1e-6) and same_state(curve.point(1.0), sb, atol=1e-6)
    line = connectivity.linear_path(a, sa, sb, x, y, points=11)
    bent = curve.path(a, x, y, points=11)
    assert float(bent.loss[5]) < float(line.loss[5])
    assert bent.loss_barrier < line.loss_barrier
    assert same_state(state_of(a), sa)  # the template was not changed


def test_zipping_a_model_with_itself_returns_its_function():
    model = mlp(6)
    x = torch.randn(300, 6)
    zipped = zipit.zipit(state_of(model), state_of(model), LAYERS, x)
    assert torch.allclose(zipped.model(x), model(x), atol=1e-5)
    assert sum(p.numel() for p in zipped.model.parameters()) == sum(p.numel() for p in model.parameters())


def test_zipping_no_layer_is_the_ensemble_and_partial_zips_cost_less():
    a, b = mlp(7), mlp(8)
    x = torch.randn(300, 6)
    z0 = zipit.zipit(state_of(a), state_of(b), LAYERS, x, zip_layers=0)
    assert torch.allclose(z0.model(x), 0.5 * (a(x) + b(x)), atol=1e-5)
    z1 = zipit.zipit(state_of(a), state_of(b), LAYERS, x, zip_layers=1)
    z2 = zipit.zipit(state_of(a), state_of(b), LAYERS, x, zip_layers=2)
    sizes = [z.model.parameter_count() for z in (z0, z1, z2)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_zip_matrices_pair_every_feature_once():
    za, zb = torch.randn(50, 4), torch.randn(50, 4)
    merge, unmerge = zipit.zip_matrices(za, zb)
    assert merge.shape == (4, 8) and unmerge.shape == (8, 4)
    assert torch.equal(unmerge.sum(1), torch.ones(8)) and torch.allclose(merge.sum(1), torch.ones(4))
    m2, _ = zipit.zip_matrices(za, zb, within=False)
    assert torch.equal((m2[:, :4] > 0).sum(1), torch.ones(4, dtype=torch.long))  # one unit of A per pair
