"""AlphaEdit (Fang et al. 2025): the null-space projector, the projected MEMIT solve, sequential
editing with the earlier edits' keys, and the registry's editor that forgets them on clear."""
import dataclasses

import pytest
import torch

from lfmlab.editing import alphaedit, covariance, memit, metrics, rome
from lfmlab.editing.base import applied

LAYERS = (0, 1)


@pytest.fixture(scope="module")
def setup(wlm, W):
    model, tok = wlm.model, wlm.tokenizer
    covs = {layer: covariance.key_covariance(model, tok, layer) for layer in LAYERS}
    prefixes = rome.random_prefixes(model, tok, 5, seed=0)
    reqs = W.edit_requests(6, seed=5)
    cfg = alphaedit.AlphaEditConfig(edit_layers=LAYERS)
    z = memit.targets(model, tok, reqs, cfg, prefixes)
    return model, tok, covs, prefixes, reqs, cfg, z


def test_the_projector_spans_the_small_eigenvalues_and_is_idempotent():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 12, generator=g, dtype=torch.float64)
    C = A @ A.T / 12 + 1e-6 * torch.eye(40, dtype=torch.float64)     # rank 12 + a tiny ridge
    P, nullity = alphaedit.projector(C, 0.01)
    assert nullity == 28
    assert torch.allclose(P @ P, P, atol=1e-10) and torch.allclose(P, P.T)
    assert (P @ A).abs().max() < 1e-6                  # the preserved keys see nothing of it
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            alphaedit.projector(C, bad)


def test_the_update_lies_in_the_null_space_and_disturbs_the_old_keys_less(setup):
    model, tok, covs, prefixes, reqs, cfg, z = setup
    ae = alphaedit.AlphaEdit(model, tok, cfg, covs, prefixes, sequential=False)
    res = ae(reqs, z=z)
    assert set(res.info["nullity"]) == set(LAYERS)
    for layer in LAYERS:
        upd = res.deltas[f"transformer.h.{layer}.mlp.c_proj.weight"].double()   # Conv1D: [4d, d]
        P = ae.P[layer]
        assert (upd - P @ upd).norm() < 1e-6 * upd.norm()
    plain = alphaedit.edit(model, tok, reqs, dataclasses.replace(cfg, nullspace_threshold=1e9), covs, prefixes, z)
    assert alphaedit.disturbance(model, res.deltas, covs) < 0.5 * alphaedit.disturbance(model, plain.deltas, covs)


def test_alphaedit_edits_and_leaves_the_model_unchanged(setup):
    model, tok, covs, prefixes, reqs, cfg, z = setup
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = metrics.reference(model, tok, reqs)
    res = alphaedit.edit(model, tok, reqs, cfg, covs, prefixes, z)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    with applied(model, res.deltas):
        scores = metrics.evaluate(model, tok, reqs, ref)
    assert scores.efficacy >= 0.5 and scores.neighbourhood >= 0.8, scores


def test_sequential_batches_keep_the_earlier_keys_and_clear_forgets_them(setup, wlm, W):
    from lfmlab import editing

    model, tok, covs, prefixes, reqs, cfg, z = setup
    ae = alphaedit.AlphaEdit(model, tok, cfg, covs, prefixes)
    ae(reqs[:3], z=z[:3])
    first = {layer: kk.clone() for layer, kk in ae.cache.items()}
    assert set(first) == set(LAYERS)
    ae(reqs[3:], z=z[3:])
    assert all(torch.linalg.matrix_norm(ae.cache[layer]) > torch.linalg.matrix_norm(first[layer]) for layer in LAYERS)
    ae.reset()
    assert not ae.cache

    bench = editing.Workbench(model, tok, W, layer=0, covariances={0: covs[0]}, prefixes=prefixes)
    ed = editing.editors(bench, {"AlphaEdit": cfg})["AlphaEdit"]
    ed.add(reqs[0])
    assert ed._edit.cache
    ed.clear()
    assert not ed._edit.cache and not ed.deltas


@pytest.mark.parametrize("kwargs,name", [({"l2": -1.0}, "l2"), ({"l2": float("nan")}, "l2"),
                                         ({"nullspace_threshold": 0.0}, "nullspace_threshold"),
                                         ({"nullspace_threshold": float("inf")}, "nullspace_threshold")])
def test_bad_settings_say_what_is_allowed(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} = .*positive finite"):
        alphaedit.AlphaEditConfig(**kwargs)
