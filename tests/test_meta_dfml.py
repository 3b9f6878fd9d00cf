"""Data-free meta-learning: the zoo, the weight-space baseline, zoo inversion and meta-training on it."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab.core.inversion import InversionConfig
from lfmlab.data import digits as data
from lfmlab.meta import dfml, maml, nets, pools


@pytest.fixture(scope="module")
def small_zoo():
    d = data.load("cpu")
    pool = pools.augmented_pool(d.train, data.META_TRAIN_CLASSES, 2)
    held = pools.augmented_pool(d.val, data.META_TRAIN_CLASSES, 2)
    return dfml.train_zoo(pool, held, lambda m: nets.classifier(4, seed=m, device="cpu"), n_models=3, steps=60,
                          generator=torch.Generator().manual_seed(0))


def test_zoo_models_learn_their_own_tasks(small_zoo):
    assert len(small_zoo) == 3 and small_zoo.classes.shape == (3, 5)
    assert float(small_zoo.accuracy.min()) > 0.6                            # chance is 0.2
    assert all(len(set(c.tolist())) == 5 for c in small_zoo.classes)


def test_weight_average_is_the_mean_and_a_fixed_point_for_identical_models(small_zoo):
    avg = dfml.weight_average(small_zoo)
    for k, v in avg.state_dict().items():
        assert torch.allclose(v, torch.stack([m.state_dict()[k] for m in small_zoo.models]).mean(0))
    same = dfml.Zoo([small_zoo.models[0]] * 3, small_zoo.classes, small_zoo.accuracy, 0.0)
    for mode in ("average", "reptile"):
        out = dfml.weight_average(same, mode)
        assert all(torch.allclose(v, small_zoo.models[0].state_dict()[k]) for k, v in out.state_dict().items())
    with pytest.raises(ValueError):
        dfml.weight_average(small_zoo, "median")


@pytest.mark.parametrize("black_box", [False, True])
def test_inverting_the_zoo_gives_confident_pseudo_classes(small_zoo, black_box):
    cfg = InversionConfig(steps=30, queries=8)
    out = dfml.invert_zoo(small_zoo, per_class=4, config=cfg, black_box=black_box,
                          generator=torch.Generator().manual_seed(0))
    assert out.pool.shape == (15, 4, 1, 8, 8) and out.probs.shape == (15, 4, 5)
    assert out.black_box is black_box
    # pseudo-class m * 5 + j is model m's label j: the model agrees
    labels = out.probs.argmax(-1)
    assert float((labels == (torch.arange(15) % 5)[:, None]).float().mean()) > 0.8
    assert out.model_queries > (10_000 if black_box else 0)


def test_meta_training_on_pseudo_data_returns_a_new_initialisation(small_zoo):
    pseudo = dfml.invert_zoo(small_zoo, per_class=4, config=InversionConfig(steps=10),
                             generator=torch.Generator().manual_seed(0))
    start = nets.classifier(4, seed=0, device="cpu")
    before = {k: v.clone() for k, v in start.state_dict().items()}
    res = dfml.meta_train(start, pseudo, maml.MAMLConfig(inner_lr=0.4, inner_steps=1, meta_batch=4, iterations=5),
                          k_shot=1, n_query=3, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in start.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in res.model.state_dict().items())
    assert res.losses.shape == (5,)
