"""FitNets hints and relational KD (lfmlab.distill.features): the losses' invariances, and training."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch
from torch import nn

from lfmlab import zoo
from lfmlab.data import digits
from lfmlab.distill import features


def test_rkd_losses_see_structure_not_scale_width_or_position():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(12, 16, generator=g)
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    s = 3.0 * t @ rot + 5.0                                   # rotated, scaled, shifted: same relations
    assert float(features.rkd_distance(t, s)) < 1e-6
    assert float(features.rkd_angle(t, s)) < 1e-6
    wide = torch.cat([t, torch.zeros(12, 8)], 1)              # another width, same geometry
    assert float(features.rkd_distance(wide, t)) < 1e-6 and float(features.rkd_angle(wide, t)) < 1e-6
    other = torch.randn(12, 16, generator=g)
    assert float(features.rkd_distance(t, other)) > 1e-3 and float(features.rkd_angle(t, other)) > 1e-3


def test_rkd_gradients_reach_the_student_only():
    t = torch.randn(8, 4, requires_grad=True)
    s = torch.randn(8, 6, requires_grad=True)
    (features.rkd_distance(t, s) + features.rkd_angle(t, s)).backward()
    assert t.grad is None and s.grad is not None and float(s.grad.abs().sum()) > 0


def test_hint_loss_is_half_the_squared_error_after_the_regressor():
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
    u = torch.randn(4, 3, 2, 2)
    with torch.no_grad():
        assert float(features.hint_loss(u, u, conv)) == pytest.approx(0.0)
        assert float(features.hint_loss(u + 1.0, u, conv)) == pytest.approx(0.5 * 12)


def test_feature_kd_trains_every_term_and_leaves_the_models_alone():
    d = digits.load("cpu")
    teacher, student = zoo.load("digits-teacher").model.eval(), zoo.load("digits-student").model
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = features.FeatureKDConfig(steps=60, batch_size=32, hint=0.1, rkd_distance=25.0, rkd_angle=50.0,
                                   eval_every=30)
    r = features.feature_kd(teacher, student, d.train.x[:256], cfg, (d.test.x, d.test.y),
                            generator=torch.Generator().manual_seed(0), show=False)
    assert set(r.history) == {"kd", "hint", "rkd distance", "rkd angle"}
    for name, h in r.history.items():
        assert h[-10:].mean() < h[:10].mean(), name
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    untrained = zoo.digits.accuracy(student, d.test.x, d.test.y)
    assert r.accuracy > untrained + 0.1 and len(r.curve_accuracy) == 2     # 0.29-0.31 against 0.10


def test_feature_kd_refuses_bad_weights_and_unknown_layers():
    teacher, student = zoo.load("digits-teacher").model.eval(), zoo.load("digits-student").model
    x = digits.load("cpu").train.x[:8]
    with pytest.raises(ValueError, match="hint"):
        features.feature_kd(teacher, student, x, features.FeatureKDConfig(steps=1, hint=-1.0), show=False)
    with pytest.raises(KeyError, match="features.99"):
        features.feature_kd(teacher, student, x, features.FeatureKDConfig(steps=1), hint_layer="features.99",
                            show=False)
