"""Logit ensembles, deep ensembles trained with vmap, BatchEnsemble, LAWA and the task pool (lfmlab.reuse)."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab.core.state import state_of
from lfmlab.data import digits as D
from lfmlab.reuse import (
    batchensemble,
    ensemble,
    lawa,
    merging,
    task_arithmetic,
    taskpool,
)
from lfmlab.zoo import digits as Z


def test_logit_ensemble_is_eq_8_vectorised_or_not():
    torch.manual_seed(0)
    models = [Z.DigitsMLP((8,), 3, in_features=6).eval() for _ in range(3)]
    x = torch.randn(5, 6)
    ens = ensemble.ensemble(models, [0.5, 0.3, 0.2])
    assert ens.vectorised
    expected = 0.5 * models[0](x) + 0.3 * models[1](x) + 0.2 * models[2](x)
    assert torch.allclose(ens(x), expected, atol=1e-6)
    mixed = ensemble.ensemble([models[0], Z.DigitsMLP((4,), 3, in_features=6)], [1.0, 0.0])
    assert not mixed.vectorised and torch.allclose(mixed(x), models[0](x), atol=1e-6)


def test_batchensemble_members_are_rank_one_modulations_of_one_weight():
    layer = batchensemble.BatchEnsembleLinear(6, 4, members=3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 6).expand(3, 5, 6)
    out = layer(x)
    for i in range(3):
        assert torch.allclose(out[i], x[i] @ layer.member_weight(i).T + layer.bias[i], atol=1e-5)
    with torch.no_grad():
        layer.r.fill_(1.0)
        layer.s.fill_(1.0)
        layer.bias.zero_()
    out = layer(x)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], x[0] @ layer.weight.T, atol=1e-6)


@pytest.fixture(scope="module")
def digits():
    return D.load("cpu")


def test_train_members_and_batchensemble_learn(digits):
    small = D.Split(digits.train.x[:500], digits.train.y[:500], digits.train.index[:500])
    recipe = {"arch": "mlp", "hidden": [32], "n_classes": 10}
    members = ensemble.train_members(lambda s: Z.build(recipe, seed=s), 3, small, epochs=8, lr=1e-2)
    accs = [Z.accuracy(m, digits.test.x, digits.test.y) for m in members.models]
    assert min(accs) > 0.8
    assert not torch.equal(members.models[0].head.weight, members.models[1].head.weight)
    assert float(members.losses[-1].mean()) < float(members.losses[0].mean())
    be = batchensemble.train_batchensemble(small, members=3, hidden=(32,), epochs=8, lr=1e-2)
    assert Z.accuracy(be.model, digits.test.x, digits.test.y) > 0.8
    params = sum(p.numel() for p in be.model.parameters())
    assert params < 1.5 * sum(p.numel() for p in members.models[0].parameters())


def test_lawa_averages_the_last_k_checkpoints(digits):
    model = Z.DigitsMLP((16,), 10)
    small = D.Split(digits.train.x[:200], digits.train.y[:200], digits.train.index[:200])
    traj = lawa.train_trajectory(model, small, epochs=4, lr=0.05)
    assert len(traj.checkpoints) == 4
    avg = lawa.lawa(traj.checkpoints, k=2).state
    k = "head.weight"
    assert torch.allclose(avg[k], 0.5 * (traj.checkpoints[2][k] + traj.checkpoints[3][k]), atol=1e-6)
    assert lawa.lawa(traj.checkpoints, k=3, at=0).hyper["k"] == 1


@pytest.fixture(scope="module")
def pool():
    backbone = Z.load("digits-backbone")[0]
    return taskpool.finetune_tasks(backbone, tasks=["parity", "mod3", "digits5-9+rot90"], epochs=2,
                                   device="cpu", progress=False)


def test_task_pool_fine_tunes_the_trunk_and_keeps_the_backbone(pool):
    backbone = Z.load("digits-backbone")[0]
    assert all(torch.equal(v, state_of(backbone)[k]) for k, v in pool.pretrained.items())
    pre, ind = pool.accuracy(pool.trunk()), pool.accuracy()
    assert all(ind[t] > pre[t] for t in pool.tasks)
    assert pool.trunk_keys == ["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]
    assert pool.splits["digits5-9+rot90"]["test"].y.max() == 4
    assert pool.control_accuracy(pool.trunk()) > 0.95
    batch = pool.accuracy_batch({k: torch.stack([pool.trunk()[k], pool.trunk("parity")[k]]) for k in pool.trunk_keys})
    assert batch.shape == (2, 3) and abs(float(batch[1, 0]) - ind["parity"]) < 1e-6


def test_negating_a_task_vector_forgets_that_task_only(pool):
    neg = task_arithmetic.negation(pool.trunk(), pool.trunk("parity"), lam=2.0).state
    before, after = pool.accuracy(pool.trunk(), tasks=["parity"]), pool.accuracy(neg, tasks=["parity"])
    assert after["parity"] < before["parity"] - 0.1
    assert pool.control_accuracy(neg) > pool.control_accuracy(pool.trunk()) - 0.1


def test_merging_bench_compares_all_methods(pool):
    cmp = merging.compare(pool, merging.METHODS, adamerging_kw={"steps": 5})
    assert set(cmp.rows) == {"pretrained", "individual", "ensemble", *merging.METHODS}
    assert cmp.mean("individual") > cmp.mean("pretrained")
    assert cmp.recovered("individual") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown method"):
        merging.merge(pool, "soup of the day")
    with pytest.raises(KeyError, match="not in the pool"):
        merging.merge(pool, "average", ["parity", "nope"])
