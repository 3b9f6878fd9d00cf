"""PURER (episode curriculum inversion): the dynamic dataset, the switch and the adversarial step."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab.core.inversion import InversionConfig
from lfmlab.data import digits as data
from lfmlab.meta import dfml, maml, nets, pools, purer


@pytest.fixture(scope="module")
def zoo_and_pseudo():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.train, data.META_TRAIN_CLASSES, 2)          # 10 classes
    held = pools.augmented_pool(d.val, data.META_TRAIN_CLASSES, 2)
    zoo = dfml.train_zoo(pool, held, lambda m: nets.classifier(4, seed=m, device="cpu"), n_models=2, steps=60,
                         generator=torch.Generator().manual_seed(0), disjoint=True)
    pseudo = dfml.invert_zoo(zoo, per_class=6, config=InversionConfig(steps=10),
                             generator=torch.Generator().manual_seed(0))
    return zoo, pseudo


def test_a_disjoint_zoo_shares_no_class_and_refuses_too_many_models():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.train, data.META_TRAIN_CLASSES, 2)
    zoo = dfml.train_zoo(pool, pool, lambda m: nets.classifier(4, seed=m, device="cpu"), n_models=2, steps=1,
                         disjoint=True, generator=torch.Generator().manual_seed(1))
    assert len(set(zoo.classes.flatten().tolist())) == 10
    with pytest.raises(ValueError, match="disjoint"):
        dfml.train_zoo(pool, pool, lambda m: nets.classifier(4, seed=m, device="cpu"), n_models=3, disjoint=True)


def _config(adv_scale):
    return purer.PURERConfig(meta=maml.MAMLConfig(inner_lr=0.4, inner_steps=1, meta_batch=4, iterations=8),
                             k_shot=1, n_query=3, adv_scale=adv_scale, adv_start=0.25, patience=2,
                             models_per_step=2)


def test_purer_evolves_the_pseudo_images_switches_and_leaves_its_inputs_alone(zoo_and_pseudo):
    zoo, pseudo = zoo_and_pseudo
    start = nets.classifier(4, seed=0, device="cpu")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    pool_before = pseudo.pool.clone()
    zoo_before = [{k: v.clone() for k, v in m.state_dict().items()} for m in zoo.models]
    res = purer.purer(start, zoo, pseudo, _config(10.0), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert torch.equal(pseudo.pool, pool_before)
    assert all(torch.equal(s[k], v) for s, m in zip(zoo_before, zoo.models) for k, v in m.state_dict().items())
    assert all(p.requires_grad for m in zoo.models for p in m.parameters())
    assert res.data.pool.shape == pseudo.pool.shape and not torch.equal(res.data.pool, pseudo.pool)
    assert float(res.data.pool.min()) >= 0 and float(res.data.pool.max()) <= 1
    assert res.switches and res.switches[0] == 2          # on once at 25 % of 8 iterations, used at the next
    assert len(res.hardness) == len(res.switches) and res.losses.shape == (8,)
    assert 0 <= res.data.confidence <= 1


def test_without_the_curriculum_no_adversarial_step_is_taken(zoo_and_pseudo):
    zoo, pseudo = zoo_and_pseudo
    res = purer.purer(nets.classifier(4, seed=0, device="cpu"), zoo, pseudo, _config(0.0),
                      generator=torch.Generator().manual_seed(0))
    assert res.switches == [] and res.hardness == []


def test_the_adversarial_step_makes_the_episode_harder(zoo_and_pseudo):
    """One X̂ step on −λ·L_outer alone raises L_outer of that episode for the same θ."""
    zoo, pseudo = zoo_and_pseudo
    model = nets.classifier(4, seed=0, device="cpu")
    params = maml.params_of(model)
    x = pseudo.pool.clone().requires_grad_(True)
    ep = pools.episodes(x, 5, 1, 3, 1, torch.Generator().manual_seed(3))
    from lfmlab.meta.common import cross_entropy

    def outer(pool):
        e = pools.episodes(pool, 5, 1, 3, 1, torch.Generator().manual_seed(3))
        return maml.task_loss(model, cross_entropy, 1, 0.4, None, params, e.support_x[0], e.support_y[0],
                              e.query_x[0], e.query_y[0])

    before = outer(x)
    (-before).backward()
    with torch.no_grad():
        harder = x - 0.05 * x.grad.sign()
    assert ep.support_x.requires_grad
    assert float(outer(harder)) > float(before)


def test_purer_refuses_black_box_data_and_bad_settings(zoo_and_pseudo):
    zoo, pseudo = zoo_and_pseudo
    from lfmlab.validate import BadValue

    with pytest.raises(BadValue):
        purer.purer(nets.classifier(4, seed=0, device="cpu"), zoo, pseudo, purer.PURERConfig(adv_scale=float("nan")))
    black = dfml.PseudoData(pseudo.pool, pseudo.probs, 0.5, 1, 0.0, True)
    with pytest.raises(ValueError, match="white-box"):
        purer.purer(nets.classifier(4, seed=0, device="cpu"), zoo, black)
