"""Meta-transfer learning (lfmlab.meta.mtl): SS is eq. 3, only Φ moves, inputs stay untouched, bad input is refused."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lfmlab  # noqa: F401
from lfmlab import validate
from lfmlab.data import digits
from lfmlab.meta import maml, mtl, nets, pools


@pytest.fixture(scope="module")
def pool():
    return pools.augmented_pool(digits.load().train, digits.META_TRAIN_CLASSES)   # [40, M, 1, 8, 8]


def test_ss_at_its_start_is_the_frozen_backbone_and_the_head_starts_at_zero():
    emb = nets.embedding(16, seed=0, device="cpu")
    x = torch.rand(7, 1, 8, 8)
    ss = mtl.SSNet(emb, 5)
    assert torch.allclose(ss.features(x), emb(x), atol=1e-6)
    assert torch.equal(ss(x), torch.zeros(7, 5))
    assert sorted(n for n, _ in ss.named_parameters()) == ["head.bias", "head.weight", "scale0", "scale1",
                                                            "shift0", "shift1"]
    calibrated = mtl.SSNet(emb, 5, calibration=x)
    assert float(calibrated.features(x).detach().norm(dim=1).mean()) == pytest.approx(1.0, rel=1e-5)


def test_scaling_and_shifting_is_eq_3_per_output_channel():
    emb = nets.embedding(4, seed=1, device="cpu")
    ss = mtl.SSNet(emb, 5)
    with torch.no_grad():
        ss.scale0.copy_(torch.tensor([0.5, 2.0, 1.0, -1.0]))
        ss.shift0.copy_(torch.tensor([0.1, 0.0, -0.2, 0.3]))
    x = torch.rand(3, 1, 8, 8)
    conv0, conv1 = emb.net[0], emb.net[2]
    h = F.relu(F.conv2d(x, conv0.weight * ss.scale0[:, None, None, None], conv0.bias + ss.shift0, padding=1))
    h = F.max_pool2d(F.relu(conv1(h)), 2).flatten(1)
    assert torch.allclose(ss.features(x), h, atol=1e-6)


def test_meta_training_moves_only_phi_and_leaves_its_inputs_alone(pool):
    cfg = mtl.MTLConfig(pretrain_steps=30, iterations=6, meta_batch=12)   # ≥ 5 distinct failure classes
    before = pool.clone()
    r = mtl.mtl(pool, cfg, channels=8, seed=0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pool, before)
    assert 0.0 <= r.pretrain_accuracy <= 1.0 and r.pretrain_seconds > 0 and r.losses.shape == (6,)
    assert torch.isfinite(r.losses).all()
    start, after = dict(r.start.named_parameters()), dict(r.model.named_parameters())
    assert all(torch.equal(start[n], torch.ones_like(start[n])) for n in start if n.startswith("scale"))
    assert torch.equal(after["head.weight"], torch.zeros_like(after["head.weight"]))   # θ's start is not learned
    assert any(not torch.equal(start[n], after[n]) for n in start if n.startswith(("scale", "shift")))
    for name, buf in r.start.named_buffers():                                        # Θ is frozen
        assert torch.equal(buf, dict(r.model.named_buffers())[name])
    assert r.hard.tolist() == [False, True, False, True, False, True]               # HT: every second batch
    assert r.names == ["head.weight", "head.bias"]
    no_ht = mtl.meta_train(r.start, mtl.halves(pool, cfg)[1], mtl.MTLConfig(iterations=3, meta_batch=4,
                                                                            hard_tasks=False))
    assert not no_ht.hard.any()


def test_failure_classes_are_classes_of_their_own_tasks(pool):
    cfg = mtl.MTLConfig(pretrain_steps=0, iterations=0)
    ss = mtl.mtl(pool, cfg, channels=8, seed=0).start
    tasks = pools.episodes(pool, 5, 1, 5, 6, torch.Generator().manual_seed(3))
    failed = mtl.failure_classes(ss, tasks, cfg, torch.Generator().manual_seed(4))
    assert failed.shape[0] <= 6
    assert all(int(f) in tasks.classes.flatten().tolist() for f in failed)


def test_the_null_is_an_untrained_network_and_adaptation_uses_the_head_only(pool):
    r = mtl.mtl(pool, mtl.MTLConfig(pretrain_steps=0, iterations=0), channels=8, seed=0)
    ep = pools.episodes(pool, 5, 1, 5, 4, torch.Generator().manual_seed(1))
    a = maml.adaptation(r.model, ep, torch.nn.functional.cross_entropy, 5, r.config.inner_lr, r.names)
    assert a.loss.shape == (6, 4) and bool((a.loss[-1] < a.loss[0]).all())
    assert len(r.losses) == 0 and r.model is not r.start


@pytest.mark.parametrize("field,value,words", [
    ("inner_lr", float("nan"), "NaN"), ("inner_lr", -1.0, "outside"), ("outer_lr", 0.0, "outside"),
    ("iterations", -1, ">= 0"), ("n_way", 1, ">= 2"), ("k_shot", 1.5, "whole number"),
])
def test_bad_settings_are_refused_with_the_field_and_a_fix(field, value, words):
    with pytest.raises(validate.BadValue, match=field) as err:
        mtl.MTLConfig(**{field: value})
    assert words in str(err.value) and "MTLConfig(" in str(err.value)


def test_bad_pools_and_backbones_are_refused(pool):
    with pytest.raises(ValueError, match=r"\[C, M, 1, 8, 8\]"):
        mtl.halves(pool.flatten(0, 1))
    with pytest.raises(ValueError, match="lower k_shot or n_query"):
        mtl.halves(pool[:, :20])
    with pytest.raises(ValueError, match="at least 5 classes|≥ 5 classes"):
        mtl.halves(pool[:3])
    bad = pool.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(validate.NotFinite):
        mtl.halves(bad)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        mtl.SSNet(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(validate.BadValue, match="channels"):
        mtl.mtl(pool, mtl.MTLConfig(iterations=0, pretrain_steps=0), channels=0)


def test_the_fast_paths_give_maml_s_numbers_with_the_head_as_the_adapted_parameters(pool):
    from lfmlab.meta.common import accuracy, cross_entropy

    cfg = mtl.MTLConfig(pretrain_steps=20, iterations=3, meta_batch=8)
    r = mtl.mtl(pool, cfg, channels=8, seed=0, generator=torch.Generator().manual_seed(2))
    model = r.model
    with torch.no_grad():                                   # a head away from zero, so both paths have work
        model.head.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(5))
    tasks = pools.episodes(pool, 5, 2, 3, 4, torch.Generator().manual_seed(6))
    params = maml.params_of(model)
    v_fast, g_fast = mtl.meta_gradient(model, params, tasks, cfg)
    v_ref, g_ref = maml.meta_gradient(model, params, tasks, cross_entropy, cfg.inner_steps, cfg.inner_lr, mtl.HEAD)
    assert torch.allclose(v_fast, v_ref, atol=1e-5)
    for n in g_ref:
        assert torch.allclose(g_fast[n], g_ref[n], atol=1e-5, rtol=1e-4), n
    fast = mtl.adaptation(model, tasks, 5, cfg.inner_lr)
    ref = maml.adaptation(model, tasks, cross_entropy, 5, cfg.inner_lr, mtl.HEAD, accuracy)
    assert torch.allclose(fast.loss, ref.loss, atol=1e-5) and torch.equal(fast.metric, ref.metric)
