"""The tuning tasks (world-lm questions, minilm country -> continent, instructions) and the tuning panel."""
import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab.tuning import instruct, tasks
from lfmlab.tuning.train import TrainConfig
from lfmlab.zoo import hub


@pytest.fixture(scope="module")
def world_lm():
    from lfmlab import zoo

    return zoo.load("world-lm", device="cpu")


@pytest.fixture(scope="module")
def qa(world_lm):
    return tasks.world_qa(world_lm.tokenizer, max_subjects=12, seed=0, device="cpu")


def test_world_qa_splits_subjects_and_knows_every_answer(qa, world_lm):
    assert not set(qa.train_subjects) & set(qa.test_subjects)
    assert len(qa.train_subjects) == len(qa.test_subjects) == 6
    assert all(p.startswith("Q: ") and p.endswith(" A:") for p in qa.train.prompts + qa.test.prompts)
    test_subjects = set(qa.test_subjects)
    assert all(any(s in p for s in test_subjects) for p in qa.evals["held-out subjects, new questions"].prompts)
    assert not set(qa.test.prompts) & set(qa.evals["held-out subjects, new questions"].prompts)
    # the thesis of the notebook: statements are known, questions are a new interface
    assert qa.evals["statements"].accuracy(world_lm.model) > 0.9
    assert qa.test.accuracy(world_lm.model) < 0.1
    with pytest.raises(ValueError, match="train_share"):
        tasks.world_qa(world_lm.tokenizer, train_share=1.0)


def test_lmdata_rows_are_trimmed_and_scores_match_the_loss(qa, world_lm):
    b = qa.train.rows([0, 1])
    assert b.input_ids.shape[1] == int(qa.train.lengths[[0, 1]].max())
    losses, exact = qa.train.scores(world_lm.model)
    assert losses.shape == exact.shape == (len(qa.train),)
    with torch.no_grad():
        mean = qa.train.loss(world_lm.model, [3])
    torch.testing.assert_close(mean, losses[3], atol=1e-4, rtol=1e-4)


def test_random_control_has_the_architecture_but_not_the_weights(world_lm):
    ctrl = tasks.random_like(world_lm.model, seed=0)
    assert type(ctrl) is type(world_lm.model)
    ref, new = world_lm.model.state_dict(), ctrl.state_dict()
    assert ref.keys() == new.keys() and all(ref[k].shape == new[k].shape for k in ref)
    k = "transformer.h.0.attn.c_attn.weight"
    assert not torch.equal(ref[k], new[k])


def test_country_continent_with_an_encoder_classifier():
    from lfmlab import zoo

    enc = zoo.load("minilm", device="cpu")
    ct = tasks.country_continent(enc.tokenizer, seed=0, device="cpu")
    assert len(ct.classes) == 6 and not set(ct.train_subjects) & set(ct.test_subjects)
    assert len(ct.train) + len(ct.test) == 195
    clf = tasks.EncoderClassifier(enc.model, len(ct.classes))
    assert clf(ct.test.input_ids[:4], ct.test.attention_mask[:4]).shape == (4, 6)
    q, v = tasks.encoder_targets(clf), tasks.encoder_sites(clf)
    assert len(q) == 2 * enc.model.config.num_hidden_layers and all(n.endswith(("query", "value")) for n in q)
    assert len(v) == 2 * enc.model.config.num_hidden_layers


def test_instruction_task_holds_out_a_relation_and_a_phrasing(world_lm):
    t = instruct.instruction_task(world_lm.tokenizer, ["capital", "language"], "continent", max_per_relation=5,
                                  device="cpu")
    assert all(p.startswith("Instruction: ") and p.endswith(" Answer:") for p in t.train.prompts)
    assert not any("continent" in p for p in t.train.prompts)
    held_phrasings = [instruct.INSTRUCTIONS[r][-1].split("{")[0] for r in ("capital", "language")]
    assert not any(h in p for h in held_phrasings for p in t.train.prompts)
    assert all(any(h in p for h in held_phrasings) for p in t.evals["held-out phrasings"].prompts)
    with pytest.raises(ValueError, match="must not be among"):
        instruct.instruction_task(world_lm.tokenizer, ["capital"], "capital")


def test_instruction_tune_records_before_and_after(world_lm):
    t = instruct.instruction_task(world_lm.tokenizer, ["capital"], "continent", max_per_relation=4, device="cpu")
    r = instruct.instruction_tune(world_lm.model, t, "lora", rank=2, config=TrainConfig(steps=4, batch_size=4))
    assert set(r.info["before"]) == set(r.info["after"]) == set(t.evals)
    assert r.trainable < 0.05 * r.base
    with pytest.raises(ValueError, match="method"):
        instruct.instruction_tune(world_lm.model, t, "magic")


def test_tuning_panel_trains_measures_and_refuses_bad_input(qa):
    from lfmlab.ui.tuning import TuningPanel

    model = hub.random_model("gpt2", seed=0)
    p = TuningPanel(model, qa, batch_size=8, latency_rows=8)
    r = p.demo(method="LoRA", size=2, steps=6)
    assert r.trainable == sum(x.numel() for x in r.result.model.parameters() if x.requires_grad)
    assert 0 < r.share < 0.1 and r.latency_ratio > 0 and 0 <= r.accuracy <= 1
    assert list(p.loss_fig.data[0].x)[-1] == 6 and "LoRA" in p.table.value
    r2 = p.demo(method="BBT", size=2)
    assert r2.method == "BBT" and len(p.history) == 2
    p.method = "adapters"
    assert p.size_slider.description == "bottleneck r" and p.size == 8
    p.size = 500
    assert p.run() is None and not p.ok and "between 1 and 128" in p.message and p.result is r2
    p.size, p.lr = 8, 5.0
    assert p.run() is None and "learning rate" in p.message and len(p.history) == 2
    with pytest.raises(ValueError, match="evaluation set"):
        TuningPanel(model, qa, eval_name="nope")
