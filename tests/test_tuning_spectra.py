"""Intruder dimensions (lfmlab.tuning.spectra)."""

import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab.tuning import lora, spectra
from lfmlab.zoo import hub


def test_a_matrix_has_no_intruders_against_itself_or_a_rescaled_self():
    w0 = torch.randn(32, 48, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spectra.similarity(w0, w0), torch.ones(10), atol=1e-5)
    assert spectra.intruders(w0, 3.0 * w0) == 0


def test_a_large_rank_one_update_in_a_new_direction_is_an_intruder():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(32, 48, generator=g)
    u0 = torch.linalg.svd(w0, full_matrices=False).U
    # a new direction, at 45 degrees to W_0's two weakest left singular vectors, made dominant
    new = (u0[:, -1] + u0[:, -2]) / 2 ** 0.5
    w = w0 + 100.0 * torch.outer(new, torch.randn(48, generator=g))
    sim = spectra.similarity(w0, w, k=3)
    assert sim[0] == pytest.approx(2 ** -0.5, abs=1e-3)        # the top direction is the intruder
    assert spectra.intruders(w0, w, k=3, eps=0.8) == 1


def test_matrix_pairs_match_names_and_refuse_an_unmerged_lora():
    model = hub.random_model("gpt2", seed=0)
    pairs = spectra.matrix_pairs(model, model, ("c_attn.weight",))
    assert len(pairs) == model.config.n_layer
    with pytest.raises(KeyError, match="merge"):
        spectra.matrix_pairs(model, lora.add_lora(model, rank=2), ("c_attn.weight",))
    with pytest.raises(ValueError, match="ε"):
        spectra.intruders(torch.eye(3), torch.eye(3), eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        spectra.similarity(torch.eye(3), torch.eye(4))
