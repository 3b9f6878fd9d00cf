"""Cross-checks of lfmlab.reuse against the reference implementations that are installable:
peft's ``merge_utils`` (a dev dependency) and, where installed, FusionBench.

FusionBench (``fusion_bench``) is *not* a dependency: its wheel pulls in lightning, hydra-core,
datasets, tensorboard and h5py. Its tests below are skipped unless it is installed.
"""
import lfmlab  # noqa: F401

# isort: split
import pytest
import torch

from lfmlab.reuse import dare, fisher, regmean, task_arithmetic, ties

merge_utils = pytest.importorskip("peft.utils.merge_utils")


def _pool(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    pre = {"a.weight": torch.randn(12, 7, generator=g), "a.bias": torch.randn(12, generator=g),
           "b.weight": torch.randn(5, 12, generator=g)}
    fts = [{k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in pre.items()} for _ in range(n)]
    return pre, fts


def _peft(pre, fts, fn, **kw):
    return {k: pre[k] + fn([ft[k] - pre[k] for ft in fts], **kw) for k in pre}


def test_task_arithmetic_matches_peft():
    pre, fts = _pool()
    lams = [0.3, 0.7, -0.2]
    ours = task_arithmetic.task_arithmetic(pre, fts, lams).state
    ref = _peft(pre, fts, merge_utils.task_arithmetic, weights=torch.tensor(lams))
    assert all(torch.allclose(ours[k], ref[k], atol=1e-6) for k in pre)


@pytest.mark.filterwarnings("ignore:The density")  # peft warns that density 1 prunes nothing
@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_ties_per_tensor_matches_peft(density):
    pre, fts = _pool(1)
    lam = 0.8
    ours = ties.ties_merging(pre, fts, density=density, lam=lam, scope="tensor").state
    ref = _peft(pre, fts, merge_utils.ties, weights=torch.full((3,), lam), density=density)
    assert all(torch.allclose(ours[k], ref[k], atol=1e-6) for k in pre)


def test_ties_global_trim_differs_from_per_tensor_but_keeps_the_same_share():
    pre, fts = _pool(2)
    g = ties.ties_merging(pre, fts, density=0.3, lam=1.0, scope="global")
    t = ties.ties_merging(pre, fts, density=0.3, lam=1.0, scope="tensor")
    assert any(not torch.allclose(g.state[k], t.state[k]) for k in pre)
    assert 0.5 < g.info["kept"] <= 1.0


@pytest.mark.parametrize("merge,fn", [("sum", "dare_linear"), ("ties", "dare_ties")])
def test_dare_matches_peft_with_the_same_random_masks(merge, fn):
    pre, fts = _pool(3)
    lam, density, seed = 0.5, 0.4, 11
    ours = dare.dare(pre, fts, density=density, lam=lam, merge=merge, seed=seed).state
    torch.manual_seed(seed)  # peft draws from the global generator, key by key, then task by task
    ref = _peft(pre, fts, getattr(merge_utils, fn), weights=torch.full((3,), lam), density=density)
    assert all(torch.allclose(ours[k], ref[k], atol=1e-6) for k in pre)


def test_magnitude_trim_matches_peft_prune():
    pre, fts = _pool(4)
    tau = fts[0]["a.weight"] - pre["a.weight"]
    ours = ties.trim(tau.reshape(1, -1), 0.25).reshape(tau.shape)
    assert torch.allclose(ours, merge_utils.prune(tau, 0.25, method="magnitude"))


# ---- FusionBench (optional) -------------------------------------------------------------------

def test_ties_matches_fusion_bench():
    fb = pytest.importorskip("fusion_bench.method.ties_merging.ties_merging_utils")
    pre, fts = _pool(5)
    keys = list(pre)
    flat = torch.stack([torch.cat([(ft[k] - pre[k]).flatten() for k in keys]) for ft in fts])
    ref = fb.ties_merging(flat, reset_thresh=0.2, merge_func="mean")
    # FusionBench keeps the entries >= the k-th largest magnitude with k = int(0.2 P), plus the
    # threshold itself: int(0.2 P) + 1 entries per task; we keep exactly int(density P) (as peft).
    p = flat.shape[1]
    ours = ties.ties_merging(pre, fts, density=(int(0.2 * p) + 1.5) / p, lam=1.0, keys=keys).state
    mine = torch.cat([(ours[k] - pre[k]).flatten() for k in keys])
    assert torch.allclose(mine, ref, atol=1e-6)


def test_regmean_and_fisher_match_fusion_bench():
    rm = pytest.importorskip("fusion_bench.method.regmean.regmean")
    fm = pytest.importorskip("fusion_bench.method.fisher_merging.fisher_merging")
    pre, fts = _pool(6)
    g = torch.Generator().manual_seed(0)
    grams = [{"a": (lambda x: x.T @ x / 20)(torch.randn(20, 7, generator=g)),
              "b": (lambda x: x.T @ x / 20)(torch.randn(20, 12, generator=g))} for _ in fts]
    ref = rm.merging_with_regmean_weights({k: [ft[k] for ft in fts] for k in pre}, grams, 0.9)
    ours = regmean.regmean(fts, grams, alpha=0.9, ridge=0.0).state
    assert all(torch.allclose(ours[k], ref[k], atol=1e-4) for k in pre)
    fishers = [{k: torch.rand(v.shape, generator=g) for k, v in ft.items()} for ft in fts]
    ref = fm.merging_with_fisher_weights({k: [ft[k] for ft in fts] for k in pre}, fishers,
                                         torch.ones(3), normalize_fisher_weight=False, minimal_fisher_weight=1e-6)
    ours = fisher.fisher_merging(fts, fishers, eps=1e-6).state
    assert all(torch.allclose(ours[k], ref[k], atol=1e-5) for k in pre)
