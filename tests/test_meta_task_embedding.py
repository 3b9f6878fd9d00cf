"""The task-embedding network (Wang et al. 2022, survey §5.2 eqs. 13-14): lfmlab/meta/task_embedding.py."""
from __future__ import annotations

import lfmlab  # noqa: F401

# isort: split
import pytest
import torch
from torch import nn

from lfmlab.data import digits
from lfmlab.meta import dfml, nets, pools
from lfmlab.meta import task_embedding as te


def small_zoo(n: int = 3, channels: int = 4) -> list[nn.Module]:
    zoo = [nets.classifier(channels, 3, seed=10 + i) for i in range(n)]
    with torch.no_grad():       # spread the models apart, as training would
        for i, m in enumerate(zoo):
            for p in m.parameters():
                p.add_(0.3 * (i + 1) * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return zoo


def gen(s: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(s)


def test_unfitted_network_is_the_plain_weight_average_for_every_embedding():
    zoo = small_zoo()
    r = te.fit(zoo, te.TENConfig(steps=0), generator=gen())
    mean = torch.stack([te.flatten(m) for m in zoo]).mean(0)
    for e in (r.network.embeddings[0].detach(), torch.randn(4), torch.zeros(4)):
        assert torch.allclose(r.network(e), mean)
    average = dfml.weight_average(dfml.Zoo(zoo, torch.zeros(3, 3, dtype=torch.long), torch.zeros(3), 0.0))
    assert torch.allclose(te.flatten(r.network.centre()), te.flatten(average), atol=1e-6)
    assert torch.allclose(r.relative_error, torch.ones(3))


def test_eqs_13_14_fit_regenerates_every_model_and_leave_the_zoo_alone():
    zoo = small_zoo()
    before = [te.flatten(m).clone() for m in zoo]
    r = te.fit(zoo, te.TENConfig(steps=400, hidden=16), generator=gen())
    assert float(r.relative_error.max()) < 0.05, r.relative_error
    assert float(r.losses[-1]) < 0.01 * float(r.losses[0])
    for i, m in enumerate(zoo):
        assert torch.equal(te.flatten(m), before[i])
        regen = r.network.regenerate(i)
        assert type(regen) is type(m) and all(p.requires_grad for p in regen.parameters())
        x = torch.rand(7, 1, 8, 8)
        assert (regen(x).argmax(-1) == m(x).argmax(-1)).float().mean() >= 0.8
    # eq. 13's value: -Σ ||f(e_i) - θ_i||² / σ², consistent with the relative errors
    thetas = torch.stack(before)
    sq = ((r.relative_error * (thetas - thetas.mean(0)).norm(dim=1)) ** 2).sum()
    assert r.log_likelihood == pytest.approx(-float(sq), rel=1e-3, abs=1e-6)


def test_the_centre_is_f_at_the_mean_embedding_and_a_new_module_each_time():
    zoo = small_zoo()
    net = te.fit(zoo, te.TENConfig(steps=50), generator=gen()).network
    a, b = net.centre(), net.centre()
    assert a is not b and torch.equal(te.flatten(a), te.flatten(b))
    assert torch.allclose(te.flatten(a), net(net.embeddings.detach().mean(0)))


def test_own_task_accuracy_reads_each_model_on_its_own_classes():
    pool = pools.augmented_pool(digits.load().val, digits.META_TRAIN_CLASSES)[:10]
    zoo = dfml.train_zoo(pool, pool, lambda m: nets.classifier(4, 5, seed=m), n_models=2, steps=20,
                         generator=gen(), disjoint=True)
    hits = te.own_task_accuracy(zoo, pool, zoo.models)
    assert hits.shape == (2, 5 * pool.shape[1])
    assert torch.allclose(hits.mean(1), zoo.accuracy)
    with pytest.raises(ValueError, match="one model per zoo task"):
        te.own_task_accuracy(zoo, pool, zoo.models[:1])


def test_bad_input_is_refused_with_the_field_and_a_fix():
    zoo = small_zoo()
    with pytest.raises(ValueError, match="at least 2 models"):
        te.fit(zoo[:1])
    with pytest.raises(ValueError, match="one architecture"):
        te.fit([zoo[0], nets.classifier(8, 3, seed=0)])
    broken = small_zoo()
    with torch.no_grad():
        next(broken[1].parameters())[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="zoo's weights"):
        te.fit(broken)
    for kw, field in ((dict(embed_dim=0), "embed_dim"), (dict(lr=-1.0), "lr"), (dict(sigma=0.0), "sigma"),
                      (dict(steps=1.5), "steps")):
        with pytest.raises(ValueError, match=field):
            te.TENConfig(**kw)


def test_registered_in_the_meta_area():
    from lfmlab.meta import METHODS

    info = METHODS["Task-embedding network"]
    assert info.run is te.fit and info.result is te.TENResult and info.config is te.TENConfig
    assert "Wang" in info.paper and info.section == "§5.2"
