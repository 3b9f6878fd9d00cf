"""lfmlab.core.inversion: DeepInversion-style synthesis, white box (with BatchNorm statistics) and black box."""
import lfmlab  # noqa: F401

# isort: split
import torch
from torch import nn

from lfmlab import zoo
from lfmlab.core import inversion
from lfmlab.core.inversion import InversionConfig, synthesise


def test_total_variation():
    assert float(inversion.total_variation(torch.ones(2, 1, 8, 8)).abs().max()) == 0.0
    stripes = torch.zeros(1, 1, 8, 8)
    stripes[..., ::2] = 1.0                                                  # columns alternate 1, 0
    assert abs(float(inversion.total_variation(stripes)[0]) - 1.0) < 1e-6


def test_white_box_inversion_of_the_bn_teacher_hits_targets_matches_bn_and_restores_the_model():
    teacher = zoo.load("digits-teacher").model.train()                       # train mode on purpose
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    targets = torch.arange(10).repeat(2)
    out = synthesise(teacher, targets, InversionConfig(steps=60), generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (20, 1, 8, 8)
    assert float(out.images.min()) >= 0.0 and float(out.images.max()) <= 1.0
    assert float(out.confidence.mean()) > 0.9
    assert float(out.history["bn"][-5:].mean()) < 0.5 * float(out.history["bn"][:5].mean())
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(not m._forward_hooks for m in inversion.bn_layers(teacher))
    # without the BN term, the BN statistics of the images stay further from the teacher's
    plain = synthesise(teacher, targets, InversionConfig(steps=60, bn=0.0), generator=torch.Generator().manual_seed(0))
    with inversion.bn_statistics(teacher) as terms, torch.no_grad():
        teacher.eval()
        teacher(out.images)
        with_bn = float(torch.stack(terms).sum())
        terms.clear()
        teacher(plain.images)
        without_bn = float(torch.stack(terms).sum())
    assert with_bn < without_bn


def test_zeroth_order_gradient_points_like_the_true_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    x = torch.rand(6, 1, 8, 8)
    y = torch.arange(6) % 5
    est, _ = inversion._zeroth_order_grad(
        model, x, y, queries=2000, mu=1e-3, generator=torch.Generator().manual_seed(1)
    )
    xr = x.clone().requires_grad_(True)
    true, = torch.autograd.grad(nn.functional.cross_entropy(model(xr), y, reduction="sum"), xr)
    cos = nn.functional.cosine_similarity(est.flatten(1), true.flatten(1)).min()
    assert float(cos) > 0.6


def test_black_box_inversion_needs_only_a_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    net[1].weight.data *= 20                                                 # a confident classifier

    def api(x):                                                              # outputs only
        with torch.no_grad():
            return net(x)

    targets = torch.tensor([0, 1, 2, 0])
    start = torch.full((4, 1, 8, 8), 0.5)
    before = torch.softmax(api(start), -1)[torch.arange(4), targets]
    out = synthesise(api, targets, InversionConfig(steps=40, gradient="zeroth_order", queries=16, lr=0.05),
                     generator=torch.Generator().manual_seed(0), init=start)
    assert float(out.confidence.mean()) > float(before.mean()) + 0.2
    assert out.model_queries == 40 * 17 * 4 + 4
