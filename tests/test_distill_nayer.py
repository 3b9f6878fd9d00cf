"""NAYER (lfmlab.distill.nayer): the noisy-layer generator, its synthesis budget and inputs."""
from __future__ import annotations

import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab import validate
from lfmlab.distill import nayer
from lfmlab.distill.kd import KDConfig


def test_the_generator_maps_class_names_through_a_noisy_layer_per_chunk():
    e = torch.randn(10, 12)
    net = nayer.NoisyLayerGenerator(e, n_chunks=2, chunk=10, z_dim=8, width=4).train()
    y = torch.arange(10).repeat(2)
    x = net(y)
    assert x.shape == (20, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    # the two chunks see the same class names but different noisy layers: different images
    assert not torch.allclose(x[:10], x[10:])
    before = net.noisy[0].weight.clone()
    net.redraw_noise(torch.Generator().manual_seed(0))
    assert not torch.equal(before, net.noisy[0].weight) and float(net.noisy[0].bias.abs().sum()) == 0
    assert abs(float(net.noisy[0].weight.std()) - 1.0) < 0.2          # N(0, 1), as the reference
    with pytest.raises(ValueError, match="noisy layers"):
        net(torch.arange(10).repeat(3))


def test_class_text_embeddings_come_from_the_shipped_minilm():
    e = nayer.class_text_embeddings(nayer.DIGIT_TEXTS[:3])
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.fixture(scope="module")
def teacher_student():
    from lfmlab import zoo

    return zoo.load("digits-teacher", device="cpu").model.eval(), zoo.load("digits-student", device="cpu").model


def test_synthesis_counts_its_teacher_passes_and_leaves_the_teacher(teacher_student):
    teacher, _ = teacher_student
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = nayer.NAYERConfig(rounds=3, per_round=20, g_steps=4, g_life=2)
    e = torch.randn(10, 16)
    images, targets, _, net, hist = nayer.synthesise_bank(teacher, cfg, torch.Generator().manual_seed(0), e,
                                                          show=False)
    assert images.shape == (60, 1, 8, 8) and targets.tolist()[:12] == list(range(10)) + [0, 1]
    assert int(hist["teacher image passes"]) == 3 * 20 * 4
    assert len(hist["best loss per round"]) == 3 and not net.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())


def test_a_trained_generator_beats_an_untrained_one_on_the_synthesis_loss(teacher_student):
    teacher, _ = teacher_student
    e = torch.randn(10, 16)
    kw = dict(rounds=2, per_round=20, g_steps=15)
    trained = nayer.synthesise_bank(teacher, nayer.NAYERConfig(**kw), torch.Generator().manual_seed(1), e,
                                    show=False)[4]["best loss per round"]
    untrained = nayer.synthesise_bank(teacher, nayer.NAYERConfig(lr=0.0, **kw), torch.Generator().manual_seed(1), e,
                                      show=False)[4]["best loss per round"]
    assert float(trained[-1]) < 0.7 * float(untrained[-1])


def test_nayer_returns_a_new_student_and_bad_configs_say_what_to_fix(teacher_student):
    teacher, student = teacher_student
    state = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = nayer.NAYERConfig(rounds=1, per_round=10, g_steps=2, kd=KDConfig(steps=3))
    r = nayer.nayer(teacher, student, cfg, text_embeddings=torch.randn(10, 8))
    assert r.student is not student and r.n_images == 10 and r.method == "NAYER"
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in state.items())
    with pytest.raises(validate.BadValue, match="g_steps"):
        nayer.NAYERConfig(g_steps=0)
    with pytest.raises(validate.BadValue, match="lr"):
        nayer.NAYERConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="one class name per class"):
        nayer.NAYERConfig(texts=("zero",))
