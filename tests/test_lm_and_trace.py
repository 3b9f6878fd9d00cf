"""lfmlab.core.lm, lfmlab.core.hooks and causal tracing on randomly initialised models of the three
hub layouts (GPT-2, GPT-NeoX, Llama) with a tiny byte-level BPE."""
import pytest
import torch

from lfmlab.core import lm
from lfmlab.core.hooks import capture, rewrite
from lfmlab.editing import trace as tr
from lfmlab.zoo import hub, layers, weight_in_out
from lfmlab.zoo.world_lm import build_tokenizer

SENTENCES = ["The capital of Peru is Lima.", "The capital of France is Paris.",
             "Gold has the symbol Au.", "Peru is a country in South America."] * 5


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(SENTENCES, vocab_size=300)


@pytest.fixture(scope="module", params=["gpt2", "gpt_neox", "llama"])
def model(request, tok):
    return hub.random_model(request.param, vocab=len(tok), hidden=32, layers=3, heads=4)


def test_tokenizer_adds_bos_and_targets_continue_prompts(tok):
    ids = tok("The capital of Peru is")["input_ids"]
    assert ids[0] == tok.bos_token_id
    full = tok("The capital of Peru is Lima")["input_ids"]
    assert full == ids + lm.encode_target(tok, "Lima")


def test_pair_batch_marks_exactly_the_target_tokens(tok):
    b = lm.pair_batch(tok, ["The capital of Peru is", "Gold has the symbol"], ["Lima", "Au"])
    for row, target in enumerate(["Lima", "Au"]):
        labelled = b.labels[row][b.labels[row] != -100].tolist()
        assert labelled == lm.encode_target(tok, target)
        assert b.labels[row, b.prompt_len[row]].item() == labelled[0]


def test_scores_do_not_depend_on_padding(model, tok):
    prompts, targets = ["The capital of Peru is", "Gold has the symbol"], ["South America", "Au"]
    batched = lm.score(model, tok, prompts, targets)
    for i in range(2):
        alone = lm.score(model, tok, prompts[i:i + 1], targets[i:i + 1])
        assert torch.allclose(batched.logprob[i], alone.logprob[0], atol=1e-5)
    assert batched.n_tokens.tolist() == [len(lm.encode_target(tok, t)) for t in targets]


def test_exact_match_is_teacher_forced_argmax(model, tok):
    prompt, target = "The capital of Peru is", "South America"
    ids = lm.encode_prompt(tok, prompt) + lm.encode_target(tok, target)
    n = len(lm.encode_target(tok, target))
    logits = model(torch.tensor([ids])).logits[0]
    manual = all(logits[len(ids) - n - 1 + j].argmax().item() == ids[len(ids) - n + j] for j in range(n))
    assert lm.score(model, tok, [prompt], [target]).exact.item() == manual
    # and a target built from the model's own greedy tokens always matches
    first = logits[len(ids) - n - 1].argmax().item()
    forced = lm.pair_batch(tok, [prompt], [target])
    forced.labels[0, forced.prompt_len[0]] = first
    forced.input_ids[0, forced.prompt_len[0]] = first
    forced.labels[0, forced.prompt_len[0] + 1:] = -100
    _, exact = lm.target_logprobs(model(input_ids=forced.input_ids).logits, forced.labels)
    assert exact.item()


def test_bad_prompts_and_targets_are_refused(tok, model):
    with pytest.raises(ValueError, match="empty"):
        lm.encode_prompt(tok, "   ")
    with pytest.raises(ValueError, match="empty"):
        lm.encode_target(tok, "")
    with pytest.raises(ValueError, match="k must be"):
        lm.top_k(model, tok, "Gold", k=0)


def test_layers_name_real_modules(model):
    L = layers(model)
    assert L.n_layers == 3 and L.hidden == 32 and L.head_dim == 8
    proj = model.get_submodule(L.mlp_out_name(2))
    assert tuple(weight_in_out(proj).shape) == (4 * 32, 32)
    with pytest.raises(IndexError, match="out of range"):
        L.mlp_name(3)


def test_capture_and_rewrite_leave_no_hooks(model, tok):
    L = layers(model)
    ids = torch.tensor([tok("Gold has the symbol")["input_ids"]])
    base = model(ids).logits
    with capture(model, [L.mlp_name(0)]) as seen:
        model(ids)
    assert seen[L.mlp_name(0)].shape == (1, ids.shape[1], 32)
    with rewrite(model, {L.mlp_name(0): lambda out: out * 0 + 1.0}):
        assert not torch.allclose(model(ids).logits, base)
    assert torch.allclose(model(ids).logits, base)


def test_trace_without_noise_restores_nothing(model, tok):
    res = tr.trace(model, tok, "The capital of Peru is", "Peru", "Lima", samples=2, noise=0.0)
    for kind in tr.KINDS:
        assert torch.allclose(res.tables[kind], torch.full_like(res.tables[kind], res.p_clean), atol=1e-5)
    assert abs(res.p_corrupt - res.p_clean) < 1e-5


def test_trace_restoring_the_last_state_recovers_the_clean_run(model, tok):
    res = tr.trace(model, tok, "The capital of Peru is", "Peru", "Lima", samples=3, noise=1.0)
    assert res.tokens[res.subject[0]:res.subject[1]] and "Peru" in "".join(res.tokens[res.subject[0]:res.subject[1]])
    assert res.tables["hidden"].shape == (len(res.tokens), 3)
    assert abs(res.tables["hidden"][-1, -1].item() - res.p_clean) < 1e-5  # last token, last layer
    # restoring a token before the subject changes nothing: it was never corrupted
    assert torch.allclose(res.tables["hidden"][0], torch.full((3,), res.p_corrupt), atol=1e-5)


def test_subject_must_be_in_the_prompt(tok):
    with pytest.raises(ValueError, match="does not occur"):
        tr.subject_span(tok, "The capital of Peru is", "Chile")


def test_hub_load_offline_gives_a_clear_error():
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        hub.load("gpt2")
