"""The meta-learning panels, headless: demo runs every callback; bad input changes nothing."""
import lfmlab  # noqa: F401

# isort: split

from lfmlab.data import digits as data
from lfmlab.meta import nets, sinusoid
from lfmlab.ui.meta import FewShotPanel, SinusoidPanel


def test_sinusoid_panel_adapts_every_model_and_replays_steps():
    models = {"a": sinusoid.model(seed=0, device="cpu"), "b": sinusoid.model(seed=1, device="cpu")}
    p = SinusoidPanel(models)
    r = p.demo(k_shot=5, steps=4, lr=0.01, task_seed=3)
    assert set(r.curves) == {"a", "b"} and r.curves["a"].shape == (5, 200) and r.mse["b"].shape == (5,)
    assert len(r.support_x) == 5 and abs(r.amplitude) <= 5
    p.step = 2
    assert list(p.curve_fig.data[2].y) == r.curves["a"][2].tolist()
    p.lr = 0.9
    assert p.run() is None and not p.ok and "diverges" in p.message and p.result is r


def test_few_shot_panel_finetune_metric_and_bad_input():
    d = data.load("cpu")
    p = FewShotPanel(d.test, finetune={"random": nets.classifier(4, seed=0, device="cpu")},
                     metric={"ProtoNet": nets.embedding(4, seed=0, device="cpu")})
    r = p.demo(learner="random", k_shot=2, n_query=3, steps=3)
    assert r.accuracy.shape == (4,) and r.predicted.shape == (15,) and r.support_x.shape == (10, 8, 8)
    assert set(r.digits.tolist()) <= set(data.META_TEST_CLASSES)
    r2 = p.demo(learner="nearest centroid (pixels)", k_shot=5)
    assert r2.accuracy.shape == (1,) and r2.final_accuracy > 0.4
    p.k_shot, p.n_query = 20, 20
    assert p.run() is None and "smallest class" in p.message and p.result is r2
