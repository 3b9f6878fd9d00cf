"""lfmlab.distill: KD and the data-free methods of survey §3 on tiny budgets (behaviour, not quality)."""
import lfmlab  # noqa: F401

# isort: split
import math

import pytest
import torch
import torch.nn.functional as F

from lfmlab import zoo
from lfmlab.core.inversion import InversionConfig, synthesise
from lfmlab.data import digits
from lfmlab.distill import adversarial, common, dafl, deepinversion, fast, kd, zskd


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    d = digits.load("cpu")
    teacher = zoo.load("digits-teacher").model.eval()
    student = zoo.load("digits-student").model
    return d, teacher, student


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state):
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_kd_loss_is_tau_squared_kl_and_zero_on_equal_logits():
    t, s = torch.randn(5, 10), torch.randn(5, 10)
    assert float(kd.kd_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    p, q = F.softmax(t / 3, -1), F.log_softmax(s / 3, -1)
    manual = 9 * (p * (p.log() - q)).sum(-1).mean()
    assert float(kd.kd_loss(s, t, 3.0)) == pytest.approx(float(manual), rel=1e-5)


def test_shifts_and_noise():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 3, 4] = 1.0
    many = kd.all_shifts(x, 1)
    assert many.shape == (9, 1, 8, 8) and torch.equal(many.flatten(1).sum(1), torch.ones(9))
    assert sorted(tuple(m[0].nonzero()[0].tolist()) for m in many) == [(r, c) for r in (2, 3, 4) for c in (3, 4, 5)]
    n = kd.gaussian_noise(1000, torch.Generator().manual_seed(0))
    assert n.shape == (1000, 1, 8, 8) and float(n.min()) >= 0 and float(n.max()) <= 1


def test_baselines_real_kd_beats_noise_kd_and_models_are_untouched(setup):
    d, teacher, student = setup
    t0, s0 = _state(teacher), _state(student)
    cfg = kd.KDConfig(steps=80, eval_every=40)
    test, g = (d.test.x, d.test.y), lambda: torch.Generator().manual_seed(0)
    real = kd.kd_real(teacher, student, (d.train.x, d.train.y), cfg, test, g())
    sup = kd.supervised(student, (d.train.x, d.train.y), cfg, test, g())
    noise = kd.kd_noise(teacher, student, cfg, test, g())
    assert real.accuracy > 0.75 and sup.accuracy > 0.7
    assert real.accuracy > noise.accuracy + 0.1
    assert real.curve_steps.tolist() == [40, 80] and len(real.curve_accuracy) == 2
    assert _same(teacher, t0) and _same(student, s0)
    assert real.student is not student and not real.student.training
    with pytest.raises(ValueError, match="labels"):
        kd.distill(None, student, d.train.x, cfg)


def test_soft_target_inversion_matches_the_tempered_output(setup):
    _, teacher, _ = setup
    y = F.softmax(torch.randn(6, 10) * 2, -1)
    out = synthesise(teacher, y, InversionConfig(steps=80, temperature=20.0, tv=0, l2=0, bn=0, lr=0.1),
                     generator=torch.Generator().manual_seed(0))
    assert out.targets.shape == (6, 10) and out.confidence.shape == (6,)
    assert float(out.history["ce"][-5:].mean()) < float(out.history["ce"][:5].mean())
    # labels keep working as before (the API the meta-learning area uses)
    hard = synthesise(teacher, torch.arange(4), InversionConfig(steps=5))
    assert hard.targets.shape == (4,)


def test_class_similarity_and_dirichlet_targets(setup):
    _, teacher, _ = setup
    s = zskd.class_similarity(teacher)
    assert s.shape == (10, 10) and torch.allclose(s.diagonal(), torch.ones(10))
    assert float(s.min()) >= 0 and float(s.max()) <= 1
    y = zskd.dirichlet_targets(s, per_class=400, betas=(1.0,), generator=torch.Generator().manual_seed(0))
    assert y.shape == (4000, 10) and torch.allclose(y.sum(-1), torch.ones(4000), atol=1e-5)
    # the Dirichlet mean of class c's targets is its similarity row, normalised (order 0..9, 0..9, ...)
    mean = y.view(400, 10, 10).mean(0)
    alpha = s.clamp_min(zskd.MIN_CONCENTRATION)
    assert torch.allclose(mean, alpha / alpha.sum(-1, keepdim=True), atol=0.03)
    again = zskd.dirichlet_targets(s, 400, (1.0,), torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    # a small beta gives sharper (lower entropy) targets than a large one
    sharp = zskd.dirichlet_targets(s, 200, (0.1,), torch.Generator().manual_seed(1))
    ent = lambda p: float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())  # noqa: E731
    assert ent(sharp) < ent(y)


def test_synthesis_loss_terms():
    t = torch.randn(8, 10)
    assert float(common.discrepancy(t, t, "kl")) == pytest.approx(0.0, abs=1e-6)
    assert float(common.discrepancy(t, t + 1.0, "l1")) == pytest.approx(1.0)
    assert common.discrepancy(t, -t, "kl", reduction="none").shape == (8,)
    teacher = zoo.load("digits-teacher").model.eval()
    x = torch.rand(16, 1, 8, 8)
    total, terms, logits = common.synthesis_loss(teacher, x, common.Weights(ce=1, entropy=2, tv=0.5))
    assert set(terms) == {"ce", "entropy", "tv"} and logits.shape == (16, 10)
    assert float(total.detach()) == pytest.approx(
        float(terms["ce"] + 2 * terms["entropy"] + 0.5 * terms["tv"]), rel=1e-5
    )
    assert float(terms["entropy"]) >= -math.log(10) - 1e-5          # -H(p̄) >= -log C


def test_deepinversion_pool_is_class_balanced_and_bn_term_matches_statistics(setup):
    d, teacher, student = setup
    t0, s0 = _state(teacher), _state(student)
    calls = []
    cfg = deepinversion.DIConfig(per_class=2, inversion=InversionConfig(steps=40),
                                 kd=kd.KDConfig(steps=20, eval_every=10, jitter=1))
    r = deepinversion.deepinversion(teacher, student, cfg, (d.test.x, d.test.y), torch.Generator().manual_seed(0),
                                    callback=lambda *a: calls.append(a[0]))
    assert r.n_images == 20 and r.images.shape == (20, 1, 8, 8)
    assert sorted(r.labels.tolist()) == sorted(list(range(10)) * 2)       # the teacher calls each its target
    assert {"synthesis", "training"} <= set(calls) and r.synth_seconds > 0
    bn = r.history["synthesis bn"]
    assert float(bn[-5:].mean()) < 0.5 * float(bn[:5].mean())
    assert _same(teacher, t0) and _same(student, s0)
    dd = deepinversion.deepdream(teacher, student, cfg, None, torch.Generator().manual_seed(0))
    assert dd.method.startswith("DeepDream") and float(dd.history["synthesis bn"].abs().max()) == 0.0
    assert math.isnan(dd.accuracy)


def test_zskd_runs_on_soft_targets(setup):
    d, teacher, student = setup
    cfg = zskd.ZSKDConfig(per_class=2, inversion=InversionConfig(steps=20, temperature=20.0, tv=0, l2=0, bn=0),
                          kd=kd.KDConfig(steps=10))
    r = zskd.zskd(teacher, student, cfg, (d.test.x, d.test.y), torch.Generator().manual_seed(0))
    assert r.n_images == 20 and r.method.startswith("ZSKD") and 0 <= r.accuracy <= 1


def test_adversarial_generator_increases_the_discrepancy(setup):
    _, teacher, student = setup
    net = common.Generator(16, 8)
    before = _state(net)
    r = common.generator_kd(teacher, student, net, common.Weights(adversarial=1.0), iterations=30, g_steps=1,
                            s_steps=0, batch_size=32, lr_g=1e-2, kind="l1",
                            generator=torch.Generator().manual_seed(0), show=False)
    adv = r.history["adversarial"]                                           # -D per generator step
    assert float(adv[-5:].mean()) < float(adv[:5].mean())                    # D went up: G found disagreement
    assert _same(net, before) and r.generator is not net


def test_zskt_and_dfad_train_the_student(setup):
    d, teacher, student = setup
    test = (d.test.x, d.test.y)
    for kind in ("kl", "l1"):
        cfg = adversarial.AdversarialConfig(kind=kind, iterations=6, student_steps=5, batch_size=64, eval_every=10)
        r = adversarial.zskt(teacher, student, cfg, test, torch.Generator().manual_seed(0))
        assert r.curve_steps.tolist() == [10, 20, 30] and len(r.history["student"]) == 30
        assert r.method == ("ZSKT (KL)" if kind == "kl" else "DFAD (L1)")
    with pytest.raises(ValueError, match="adversarial weight"):
        adversarial.zskt(teacher, student, adversarial.AdversarialConfig(weights=common.Weights(ce=1.0)))


def test_dafl_losses_improve(setup):
    d, teacher, student = setup
    r = dafl.dafl(teacher, student, dafl.DAFLConfig(iterations=40, batch_size=64, eval_every=20),
                  (d.test.x, d.test.y), torch.Generator().manual_seed(0))
    assert set(r.history) >= {"ce", "activation", "entropy", "student"}
    assert float(r.history["ce"][-5:].mean()) < float(r.history["ce"][:5].mean())        # one-hot: confident
    assert float(r.history["activation"][-5:].mean()) < float(r.history["activation"][:5].mean())
    assert r.images.shape == (100, 1, 8, 8) and r.generator is not None


def test_fast_meta_initialisation_learns(setup):
    _, teacher, _ = setup
    cfg = fast.FastConfig(rounds=8, per_round=20, inner_steps=4)
    images, targets, seconds, meta, hist = fast.meta_synthesise(teacher, cfg, torch.Generator().manual_seed(0),
                                                                show=False)
    assert images.shape == (160, 1, 8, 8) and targets.shape == (160,) and not meta.training
    first = hist["first inner loss"]                         # the loss at the meta-init, per round
    assert float(first[-3:].mean()) < float(first[:2].mean())


def test_adaptive_deepinversion_competes_and_leaves_its_models_alone():
    from lfmlab.core.inversion import InversionConfig
    from lfmlab.distill import adaptive_di as A
    from lfmlab.distill.kd import KDConfig

    t, s = torch.randn(5, 10), torch.randn(5, 10)
    p, q = F.softmax(t / 3, -1), F.softmax(s / 3, -1)
    m = (p + q) / 2
    js = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    assert torch.allclose(A.competition(t, s), 1 - js, atol=1e-6)
    assert torch.allclose(A.competition(t, t), torch.ones(5), atol=1e-6)        # agreement: 1 - 0
    d = digits.load("cpu")
    teacher, student = zoo.load("digits-teacher").model.eval(), zoo.load("digits-student").model
    before = [{k: v.clone() for k, v in net.state_dict().items()} for net in (teacher, student)]
    cfg = A.ADIConfig(per_class=2, rounds=2, inversion=InversionConfig(steps=5), kd=KDConfig(steps=4, eval_every=2))
    test = (d.test.x[:50], d.test.y[:50])
    runs = [A.adaptive_deepinversion(teacher, student, c, test, torch.Generator().manual_seed(0))
            for c in (cfg, A.ADIConfig(**{**cfg.__dict__, "competition": 0.0}))]
    assert [r.method for r in runs] == ["Adaptive DeepInversion", "DeepInversion in rounds"]
    assert all(r.n_images == 20 and r.history["disagreement"].shape == (2,) for r in runs)
    assert runs[0].history["disagreement"][0] > runs[1].history["disagreement"][0]   # the same start, pushed apart
    for net, state in zip((teacher, student), before):
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="competition weight"):
        A.ADIConfig(competition=float("nan"))
