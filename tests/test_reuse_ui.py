"""The interpolation panel and the merging bench, headless (lfmlab.ui.merging)."""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab.data import digits as D
from lfmlab.reuse import taskpool
from lfmlab.ui.merging import InterpolationPanel, MergeBenchPanel
from lfmlab.zoo import digits as Z


@pytest.fixture(scope="module")
def data():
    return D.load("cpu")


def test_interpolation_panel_shows_the_barrier_and_follows_the_slider(data):
    models = {f"digits-mlp-{i}": Z.load(f"digits-mlp-{i}")[0] for i in range(2)}
    before = {k: v.clone() for k, v in models["digits-mlp-1"].state_dict().items()}
    panel = InterpolationPanel(models, data)
    r = panel.demo(points=9)
    assert r.naive.loss_barrier > 0.3 and r.reduction > 0.5
    assert len(panel.loss_fig.data[0].x) == 9
    panel.alpha = 0.0
    assert panel.loss_fig.data[2].x == (0.0,) and "re-basin" in panel.readout.value
    p = panel.point(1.0)
    assert abs(p["naive"][1] - p["re-basin"][1]) < 1e-6  # re-basin keeps B's function at α = 1
    assert all(torch.equal(before[k], v) for k, v in models["digits-mlp-1"].state_dict().items())
    panel.model_b = "digits-mlp-0"
    assert panel.run() is None and not panel.ok and "same model" in panel.message and panel.result is r


def test_merge_bench_merges_and_refuses_bad_input():
    backbone = Z.load("digits-backbone")[0]
    pool = taskpool.finetune_tasks(backbone, tasks=["parity", "mod3"], epochs=2, device="cpu", progress=False)
    panel = MergeBenchPanel(pool)
    r = panel.demo(method="task arithmetic", lam=0.5)
    assert r.tasks == ["parity", "mod3"] and set(r.merged) == {"parity", "mod3"}
    assert r.mean("individual") > r.mean("pretrained")
    assert list(panel.figure.data[1].y) == [r.merged["parity"], r.merged["mod3"]]
    r2 = panel.demo(method="RegMean")
    assert r2.lam is None and panel.stats is not None
    panel.tasks = ("parity",)
    assert panel.run() is None and "at least two" in panel.message and panel.result is r2
    panel.tasks, panel.method, panel.lam = ("parity", "mod3"), "TIES", 0.0
    assert panel.run() is None and "λ" in panel.message
