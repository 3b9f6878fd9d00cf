"""MAML / FOMAML / Reptile / ANIL on torch.func: the vmap meta-gradient against a per-task loop,
finite differences, and the pieces (inner step, head-only adaptation, adaptation curves)."""
import lfmlab  # noqa: F401  (before torch: OMP_WAIT_POLICY)

# isort: split
import pytest
import torch
from torch.func import functional_call

from lfmlab.meta import anil, maml, nets, pools, sinusoid
from lfmlab.meta.common import ci95, cross_entropy, mse


def sine_batch(n=8, k=10, seed=0, dtype=torch.float32):
    t = sinusoid.sample(n, k, 12, torch.Generator().manual_seed(seed), "cpu")
    return tuple(x.to(dtype) for x in t)


def digits_batch(n=4, seed=0):
    pool = torch.rand(10, 12, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    return tuple(pools.episodes(pool, 5, 1, 3, n, torch.Generator().manual_seed(seed)))


def max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("algorithm,steps", [("maml", 1), ("maml", 3), ("fomaml", 2)])
def test_vmap_meta_gradient_equals_per_task_loop(algorithm, steps):
    """The issue's bar: vmap over tasks gives the loop's meta-gradient to within 1e-5."""
    model = sinusoid.model(seed=0, device="cpu")
    params, tasks = maml.params_of(model), sine_batch(8)
    v1, g1 = maml.meta_gradient(model, params, tasks, mse, steps, 0.01, algorithm=algorithm)
    v2, g2 = maml.meta_gradient_loop(model, params, tasks, mse, steps, 0.01, algorithm=algorithm)
    assert abs(float(v1 - v2)) < 1e-5
    assert max_diff(g1, g2) < 1e-5
    assert max(float(g.abs().max()) for g in g1.values()) > 1e-2  # not trivially zero


def test_vmap_equals_loop_for_a_conv_classifier_and_for_anil():
    model = nets.classifier(4, 5, seed=0, device="cpu")
    params, tasks = maml.params_of(model), digits_batch(4)
    for names in (None, anil.head_names(model)):
        for algorithm in ("maml", "fomaml"):
            _, g1 = maml.meta_gradient(model, params, tasks, cross_entropy, 2, 0.4, names, algorithm)
            _, g2 = maml.meta_gradient_loop(model, params, tasks, cross_entropy, 2, 0.4, names, algorithm)
            assert max_diff(g1, g2) < 1e-5


def test_second_order_meta_gradient_matches_finite_differences():
    """MAML's exact meta-gradient (with the Hessian term) is the derivative of the meta-loss."""
    model = sinusoid.model((8,), seed=1, device="cpu").double()
    params, tasks = maml.params_of(model), sine_batch(4, dtype=torch.float64)
    _, g = maml.meta_gradient(model, params, tasks, mse, 2, 0.02)
    direction = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(3), dtype=v.dtype)
                 for k, v in params.items()}
    eps = 1e-6

    def meta_loss(p):
        return maml.meta_gradient(model, p, tasks, mse, 2, 0.02)[0]

    plus = meta_loss({k: v + eps * direction[k] for k, v in params.items()})
    minus = meta_loss({k: v - eps * direction[k] for k, v in params.items()})
    numeric = float((plus - minus) / (2 * eps))
    analytic = float(sum((g[k] * direction[k]).sum() for k in g))
    assert abs(numeric - analytic) < 1e-6 * max(1.0, abs(analytic))
    # ... and first order differs from it: the Hessian term is really there.
    _, g_fo = maml.meta_gradient(model, params, tasks, mse, 2, 0.02, algorithm="fomaml")
    first = float(sum((g_fo[k] * direction[k]).sum() for k in g_fo))
    assert abs(first - analytic) > 1e-3 * abs(analytic)


def test_inner_step_is_plain_sgd_and_names_restrict_it():
    model = nets.classifier(4, 5, seed=0, device="cpu")
    sx, sy, _, _ = (t[0] for t in digits_batch(1))
    params = maml.params_of(model)
    fast = maml.adapt(model, params, sx, sy, cross_entropy, steps=1, lr=0.3)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad(cross_entropy(functional_call(model, leaves, (sx,)), sy), list(leaves.values()))
    for (k, v), g in zip(params.items(), grads):
        assert torch.allclose(fast[k], v - 0.3 * g, atol=1e-6)
    head = anil.head_names(model)
    assert head == ["head.weight", "head.bias"]
    fast = maml.adapt(model, params, sx, sy, cross_entropy, steps=2, lr=0.3, names=head)
    assert all(torch.equal(fast[k], params[k]) for k in params if k not in head)
    assert not torch.equal(fast["head.weight"], params["head.weight"])


def test_reptile_direction_is_lr_times_the_mean_gradient_after_one_step():
    model = sinusoid.model(seed=0, device="cpu")
    params, tasks = maml.params_of(model), sine_batch(4)
    _, g = maml.meta_gradient(model, params, tasks, mse, 1, 0.01, algorithm="reptile")
    sx, sy, qx, qy = tasks
    expected = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(4):
        leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        x, y = torch.cat([sx[i], qx[i]]), torch.cat([sy[i], qy[i]])
        grads = torch.autograd.grad(mse(functional_call(model, leaves, (x,)), y), list(leaves.values()))
        for k, gk in zip(leaves, grads):
            expected[k] += 0.01 * gk / 4
    assert max_diff(g, expected) < 1e-6


def test_adaptation_curves_start_unadapted_and_leave_the_model_alone():
    model = sinusoid.model(seed=0, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tasks = sine_batch(6)
    a = maml.adaptation(model, tasks, mse, steps=3, lr=0.01)
    assert a.loss.shape == (4, 6) and a.metric is None
    _, _, qx, qy = tasks
    with torch.no_grad():
        plain = torch.stack([mse(model(qx[i]), qy[i]) for i in range(6)])
    assert torch.allclose(a.loss[0], plain, atol=1e-6)
    assert float(a.loss[3].mean()) < float(a.loss[0].mean())  # SGD on the support helps on the query
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    trace = maml.adaptation_trace(model, tasks[0][0], tasks[1][0], torch.zeros(7, 1), mse, 2)
    assert trace.shape == (3, 7, 1)


def test_meta_training_beats_its_starting_point_and_copies_the_model():
    model = sinusoid.model(seed=0, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = maml.MAMLConfig(iterations=300, meta_batch=10)
    res = maml.meta_train(model, sinusoid.sampler(device="cpu"), mse, cfg, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    test = sinusoid.sample(200, 10, 20, torch.Generator().manual_seed(9), "cpu")
    start = ci95(maml.adaptation(model, test, mse, 1, 0.01).loss[1])
    learned = ci95(maml.adaptation(res.model, test, mse, 1, 0.01).loss[1])
    assert learned.high < start.low  # after one step, better with 95 % confidence
    assert res.losses.shape == (300,) and res.tasks_per_second > 0


def test_unknown_algorithm_is_refused():
    model = sinusoid.model(seed=0, device="cpu")
    with pytest.raises(ValueError, match="unknown algorithm"):
        maml.meta_gradient(model, maml.params_of(model), sine_batch(2), mse, algorithm="maml++")


def test_ci95_matches_student_t():
    ci = ci95([1.0, 2.0, 3.0, 4.0])
    assert ci.mean == 2.5 and abs(ci.half - 3.182446 * 1.290994 / 2) < 1e-4 and ci.n == 4
    assert "±" in str(ci) and ci.low < ci.mean < ci.high


# --- in-context learning (lfmlab.meta.icl) ------------------------------------------------------

def test_icl_prediction_reads_only_the_prefix_and_queries_are_independent():
    from lfmlab.meta import icl, sinusoid

    net = icl.model(max_points=6, width=16, layers=1, heads=2, seed=0)
    g = torch.Generator().manual_seed(0)
    t = sinusoid.sample(3, 5, 4, g)
    x, y = t.support_x, t.support_y
    full = net(x, y)
    changed = y.clone()
    changed[:, 3:] += 10.0                                    # later labels must not leak backwards
    assert torch.allclose(net(x, changed)[:, :4], full[:, :4], atol=1e-5)
    assert not torch.allclose(net(x, changed)[:, 4], full[:, 4], atol=1e-3)
    one = icl.predict(net, x[:, :2], y[:, :2], t.query_x)
    alone = icl.predict(net, x[:, :2], y[:, :2], t.query_x[:, :1])
    assert one.shape == (3, 4, 1) and torch.allclose(one[:, :1], alone, atol=1e-5)


def test_icl_meta_training_learns_to_use_its_context():
    from lfmlab.meta import icl, sinusoid

    net = icl.model(max_points=6, width=32, layers=2, heads=2, seed=0)
    r = icl.meta_train(net, icl.ICLConfig(steps=120, tasks=32, points=6, lr=3e-3, warmup=10),
                       torch.Generator().manual_seed(0))
    assert r.losses[-20:].mean() < 0.9 * r.losses[:20].mean()        # MSE 3.91 -> 3.30 here
    assert not any(torch.equal(a, b) for a, b in zip(net.state_dict().values(), r.model.state_dict().values())
                   if a.dtype.is_floating_point)                                  # a copy was trained
    test = sinusoid.sample(20, 5, 10, torch.Generator().manual_seed(1))
    assert icl.curve(r.model, test, [0, 5]).shape == (2, 20)


def test_icl_refuses_contexts_longer_than_it_was_built_for():
    from lfmlab.meta import icl, sinusoid

    net = icl.model(max_points=4, width=16, layers=1, heads=2, seed=0)
    test = sinusoid.sample(2, 6, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="context"):
        icl.curve(net, test, [5])
    with pytest.raises(ValueError, match="exceeds"):
        icl.meta_train(net, icl.ICLConfig(steps=1, points=6))
    with pytest.raises(ValueError, match="support points"):
        test.shots(7)
