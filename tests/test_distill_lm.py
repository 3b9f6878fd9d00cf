"""lfmlab.distill.lm: sequence-level KD from a black-box LM (tiny teacher and student)."""
import lfmlab  # noqa: F401

# isort: split
import torch

from lfmlab.distill import lm
from lfmlab.zoo.world_lm import build_model, build_tokenizer

DOCS = ["The capital of Peru is Lima.", "The capital of Chile is Santiago.", "The currency of Peru is Sol."] * 30


def _teacher():
    tok = build_tokenizer(DOCS, 300)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(dict(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tok)))
    return model, tok


def test_black_box_returns_prompt_plus_text_and_is_seeded():
    model, tok = _teacher()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    api = lm.black_box(model, tok)
    out = api(["The capital of", "", "The capital of"], 1.0, 5, 0)
    assert len(out) == 3 and out[0].startswith("The capital of") and out[2].startswith("The capital of")
    assert out == api(["The capital of", "", "The capital of"], 1.0, 5, 0)                  # same seed
    greedy = api(["The capital of", "The capital of"], 0.0, 5, 1)
    assert greedy[0] == greedy[1]                                                            # τ = 0: the mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_distill_lm_learns_the_teachers_text_from_outputs_only():
    calls = []

    def api(prompts, temperature, max_new_tokens, seed):               # a black box that knows three facts
        calls.append(len(prompts))
        rng = torch.Generator().manual_seed(seed)
        return [DOCS[int(i)] for i in torch.randint(3, (len(prompts),), generator=rng)]

    cfg = lm.LMDistillConfig(
        n_texts=40,
        prompts=("",),
        topic_tokens=0,
        epochs=30,
        dedupe=False,
        batch=20,
        vocab_size=300,
        row_tokens=16,
        batch_size=4,
        lr=5e-3,
        arch=dict(n_layer=1, n_embd=32, n_head=2, n_positions=64),
    )
    r = lm.distill_lm(api, cfg, torch.device("cpu"), show=False)
    assert calls == [20, 20] and r.n_asked == 40 and set(r.texts) <= set(DOCS)
    assert r.losses[-1] < 0.5 * r.losses[0]
    ids = r.tokenizer("The capital of Peru is", return_tensors="pt")["input_ids"]
    out = r.student.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert "Lima" in r.tokenizer.decode(out[0, ids.shape[1]:])
