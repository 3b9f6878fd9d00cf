"""BiDf-MKD: zero-order recovery through an API, bi-level distillation, boundary queries, replay."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch
import torch.nn.functional as F

from lfmlab.core.inversion import InversionConfig
from lfmlab.data import digits as data
from lfmlab.meta import bidf_mkd, dfml, maml, nets, pools


@pytest.fixture(scope="module")
def zoo_and_memory():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.train, data.META_TRAIN_CLASSES, 2)          # 10 classes
    zoo = dfml.train_zoo(pool, pool, lambda m: nets.classifier(4, seed=m, device="cpu"), n_models=2, steps=60,
                         generator=torch.Generator().manual_seed(0), disjoint=True)
    memory = dfml.invert_zoo(zoo, per_class=6, config=InversionConfig(steps=10, queries=8), black_box=True,
                             generator=torch.Generator().manual_seed(0))
    return zoo, memory


def test_the_sphere_estimator_points_like_the_true_gradient(zoo_and_memory):
    zoo, memory = zoo_and_memory
    model = zoo.models[0]
    x = memory.pool[:5, :2].flatten(0, 1).clone()
    y = torch.arange(5).repeat_interleave(2)
    true = torch.autograd.grad(F.cross_entropy(model(x.requires_grad_(True)), y, reduction="sum"), x)[0]
    # one Adam step from x moves along -sign(g) at first: compare the estimated step with the true one
    out, sent = bidf_mkd.zero_order_recover(lambda z: model(z).detach(), x, y, steps=1, lr=1e-3, queries=512,
                                            mu=1e-3, generator=torch.Generator().manual_seed(1))
    step = (out - x.detach()).flatten(1)
    agree = F.cosine_similarity(step, -true.flatten(1).sign(), dim=1)
    assert float(agree.mean()) > 0.3 and sent == 513 * 10


def test_recovery_makes_the_api_more_confident(zoo_and_memory):
    zoo, _ = zoo_and_memory
    api = lambda z: zoo.models[1](z).detach()  # noqa: E731
    y = torch.arange(5).repeat_interleave(3)
    x0 = torch.full((15, 1, 8, 8), 0.5)
    x, _ = bidf_mkd.zero_order_recover(api, x0, y, steps=40, lr=0.05, queries=16, mu=0.005,
                                       generator=torch.Generator().manual_seed(0))
    p0 = torch.softmax(api(x0), -1)[torch.arange(15), y].mean()
    p1 = torch.softmax(api(x), -1)[torch.arange(15), y].mean()
    assert float(p1) > float(p0) + 0.2 and float(x.min()) >= 0 and float(x.max()) <= 1


def _cfg(kd_every):
    return bidf_mkd.BiDfMKDConfig(meta=maml.MAMLConfig(inner_lr=0.4, inner_steps=1, meta_batch=4, iterations=6),
                                  k_shot=1, n_query=3, kd_every=kd_every, kd_support=2, kd_query=2,
                                  kd_inner_steps=1, recover_steps=3, queries=4, boundary_start=0.5)


def test_distillation_episodes_run_refresh_the_memory_and_leave_the_inputs_alone(zoo_and_memory):
    zoo, memory = zoo_and_memory
    start = nets.classifier(4, seed=0, device="cpu")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    mem_before = memory.pool.clone()
    res = bidf_mkd.bidf_mkd(start, zoo, memory, _cfg(2), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert torch.equal(memory.pool, mem_before)
    assert res.kd_iterations == [0, 2, 4] and len(res.kd_losses) == 3 and all(v >= 0 for v in res.kd_losses)
    assert not torch.equal(res.memory.pool, memory.pool) and res.api_queries > 0
    assert res.memory.black_box and res.losses.shape == (6,)


def test_without_distillation_it_is_the_baseline_exactly(zoo_and_memory):
    zoo, memory = zoo_and_memory
    start = nets.classifier(4, seed=0, device="cpu")
    cfg = _cfg(0)
    res = bidf_mkd.bidf_mkd(start, zoo, memory, cfg, generator=torch.Generator().manual_seed(5))
    base = dfml.meta_train(start, memory, cfg.meta, k_shot=1, n_query=3, generator=torch.Generator().manual_seed(5))
    assert res.kd_losses == [] and res.api_queries == 0
    assert all(torch.allclose(v, base.model.state_dict()[k]) for k, v in res.model.state_dict().items())


def test_bidf_mkd_refuses_white_box_memory_and_bad_settings(zoo_and_memory):
    zoo, memory = zoo_and_memory
    from lfmlab.validate import BadValue

    white = dfml.PseudoData(memory.pool, memory.probs, 0.5, 1, 0.0, False)
    with pytest.raises(ValueError, match="black boxes"):
        bidf_mkd.bidf_mkd(nets.classifier(4, seed=0, device="cpu"), zoo, white)
    with pytest.raises(BadValue):
        bidf_mkd.bidf_mkd(nets.classifier(4, seed=0, device="cpu"), zoo, memory, bidf_mkd.BiDfMKDConfig(mu=0.0))
