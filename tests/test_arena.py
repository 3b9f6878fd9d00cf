"""The knowledge-update arena: the jobs pick the right facts, the scorer computes what it says
(hand-computed cases), every contestant leaves world-lm unchanged, and bad input is refused."""
import copy
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lfmlab import arena
from lfmlab.arena import contestants, jobs, scorer
from lfmlab.editing import registry
from lfmlab.editing.base import EditResult
from lfmlab.editing.editor import DeltaEditor, MemoryEditor


@pytest.fixture(scope="module")
def bench(wlm, W):
    return registry.Workbench(wlm.model, wlm.tokenizer, W, layer=0)


@pytest.fixture(scope="module")
def changes(W):
    return arena.change(W, 3, seed=5)


class Uniform(nn.Module):
    """Logits 0 everywhere: every token has probability 1/V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


Nothing = contestants.NoUpdate        # the null contestant: takes updates, changes nothing


class Leaky(Nothing):
    """A broken contestant: writes into the model and never takes it back."""

    name = "leaky"

    def add(self, update):
        with torch.no_grad():
            self.model.transformer.h[5].mlp.c_proj.bias.add_(1e-3)


def test_change_job_carries_sentences_and_question_forms(W, changes):
    for u in changes:
        r = u.request
        assert u.job == "change" and r.target_new != r.target_true
        assert u.sentence.endswith(f"{r.target_new}.") and r.subject in u.sentence
        assert u.sentence.rstrip(".") not in {f"{p} {r.target_new}" for p in (r.prompt, *r.paraphrase_prompts)}
        assert u.portability and all(p.startswith("Q: ") and p.endswith(" A:") and o == r.target_new
                                     for p, o in u.portability)
        assert len(u.more_sentences) == len(W.templates[r.relation]["train"]) - 2


def test_add_job_teaches_heldout_facts_the_model_gets_wrong(wlm, W):
    ups = arena.add(wlm.model, wlm.tokenizer, W, 4, seed=1)
    facts = [W.lookup(u.subject, u.request.relation) for u in ups]
    assert all(f.split == "heldout" and u.request.target_new == f.object for f, u in zip(facts, ups))
    believed = jobs.beliefs(wlm.model, wlm.tokenizer, W, facts)
    assert [u.request.target_true for u in ups] == believed
    assert all(b != f.object for b, f in zip(believed, facts))
    assert len({u.subject for u in ups}) == 4


def test_weights_hash_sees_one_changed_number(wlm):
    m = copy.deepcopy(wlm.model)
    h = scorer.weights_hash(m)
    assert h == scorer.weights_hash(wlm.model)
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.weight[3, 7] += 1e-6
    assert scorer.weights_hash(m) != h


def test_footprint_counts_deltas_and_memory_bytes(wlm):
    delta = torch.zeros(4, 3)
    ed = DeltaEditor("d", wlm.model, lambda r: EditResult({"transformer.h.0.mlp.c_proj.bias": delta}))
    ed.deltas = {"a": torch.zeros(4, 3), "b": torch.zeros(5, dtype=torch.float64)}
    assert scorer.footprint(ed) == 4 * 3 * 4 + 5 * 8

    class Memory(nn.Module):
        memory_fields = ("keys", "answers")

        def __init__(self):
            super().__init__()
            self.base = wlm.model                         # a module: never counted
            self.keys = torch.zeros(2, 5)                 # 40 bytes
            self.answers = ["Lima", "Paris"]              # 4 + 5 bytes
            self.eps = 0.5                                # configuration: not an edit

        def add(self, request):
            pass

        def clear(self):
            pass

    assert scorer.footprint(MemoryEditor("m", Memory())) == 40 + 9


@pytest.mark.parametrize("name", ["GRACE", "T-Patcher", "IKE", "RAG (BM25)", "kNN-LM"])
def test_an_empty_memory_adds_no_bytes(bench, name):
    assert arena.make(name, bench).footprint() == 0


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(wlm):
    ppl = scorer.perplexity(Uniform(1024), wlm.tokenizer, ["The capital of Peru is Lima.", "Oxygen has symbol O."])
    assert ppl == pytest.approx(1024, rel=1e-5)


def test_portability_hand_computed_on_a_uniform_model(wlm, W):
    """Under a uniform model log P(answer) = -len(tokens) log V: the shorter answer wins."""
    tok = wlm.tokenizer
    u = arena.change(W, 1, seed=2)[0]
    n_new = len(tok(" " + u.request.target_new, add_special_tokens=False)["input_ids"])
    n_old = len(tok(" " + u.request.target_true, add_special_tokens=False)["input_ids"])
    want = float(n_new < n_old)
    assert scorer._portability(Uniform(1024), tok, [u]) == want
    short, long = sorted([u.request.target_new, u.request.target_true],
                         key=lambda o: len(tok(" " + o, add_special_tokens=False)["input_ids"]))
    flipped = replace(u, request=replace(u.request, target_new=short, target_true=long),
                      portability=tuple((p, short) for p, _ in u.portability))
    assert scorer._portability(Uniform(1024), tok, [flipped]) == 1.0


def test_null_contestant_scores_as_the_unedited_model(wlm, W, changes):
    card = scorer.score(Nothing(wlm.model), wlm.tokenizer, W, changes, "text only")
    assert card.efficacy == 0.0 and card.neighbourhood == 1.0 and card.locality == 1.0
    assert card.perplexity == card.perplexity_before and card.portability == card.portability_before
    assert card.bytes_added == 0 and card.reversible == 1.0 and card.n == 3 and card.job == "change"


def test_a_contestant_that_leaves_the_model_changed_is_not_reversible(wlm, W, changes):
    m = copy.deepcopy(wlm.model)
    card = scorer.score(Leaky(m), wlm.tokenizer, W, changes[:1], "weights only")
    assert card.reversible == 0.0


@pytest.mark.parametrize("name,job", [("ROME", "change"), ("FT-L", "change"), ("IKE", "change"),
                                      ("RAG (BM25)", "change"), ("kNN-LM", "add")])
def test_contestants_update_and_leave_the_zoo_model_unchanged(wlm, W, bench, changes, name, job):
    """(The kNN-LM cannot change a fact its corpus states four times: it is tried on adding one.)"""
    before = scorer.weights_hash(wlm.model)
    c = arena.make(name, bench)
    ups = changes[:2] if job == "change" else arena.add(wlm.model, wlm.tokenizer, W, 2, seed=1)
    card = scorer.score(c, wlm.tokenizer, W, ups, arena.CONTESTANTS[name].access)
    assert scorer.weights_hash(wlm.model) == before and card.reversible == 1.0
    assert card.efficacy >= 0.5 and card.bytes_added > 0 and card.seconds_per_update > 0


def test_rag_reads_the_stored_sentence_only_for_matching_prompts(wlm, W, bench, changes):
    from lfmlab.editing import metrics

    c = arena.make("RAG (BM25)", bench)
    c.add(changes[0])
    r = changes[0].request
    prompts, targets = [r.prompt, "Zzyzx qwv"], [r.target_new, r.target_new]
    bare = metrics.pair_stats(wlm.model, wlm.tokenizer, prompts, targets).logprob
    with c.edited() as model:
        found = c.retriever.search(prompts, 1)
        assert found.score[0, 0] > 0 and found.score[1, 0] == 0
        read = metrics.pair_stats(model, wlm.tokenizer, prompts, targets).logprob
    assert read[0] > bare[0] + 1.0             # the stored sentence is read: the new object gains
    assert read[1] == bare[1]                  # no match, no context: the bare model's numbers
    c.clear()
    assert not c.sentences and c.footprint() == 0


def test_bad_input_is_refused(wlm, W, bench, changes):
    with pytest.raises(ValueError, match="unknown job"):
        arena.updates("delete", wlm.model, wlm.tokenizer, W, 2)
    with pytest.raises(ValueError, match="between 0 and"):
        arena.add(wlm.model, wlm.tokenizer, W, 10_000)
    every = arena.updates("add", wlm.model, wlm.tokenizer, W, 10_000, at_most=True)   # as many as exist
    with pytest.raises(ValueError, match=f"between 0 and {len(every)}"):
        arena.add(wlm.model, wlm.tokenizer, W, len(every) + 1)
    with pytest.raises(KeyError, match="the arena has"):
        arena.make("ROMEO", bench)
    with pytest.raises(ValueError, match="at least one"):
        scorer.score(Nothing(wlm.model), wlm.tokenizer, W, [], "text only")
    with pytest.raises(ValueError, match="access must be"):
        scorer.score(Nothing(wlm.model), wlm.tokenizer, W, changes, "telepathy")
    mixed = [changes[0], jobs.Update("add", *[getattr(changes[1], f) for f in ("request", "sentence",
                                                                                 "more_sentences", "portability")])]
    with pytest.raises(ValueError, match="one job at a time"):
        scorer.score(Nothing(wlm.model), wlm.tokenizer, W, mixed, "text only")


@pytest.mark.parametrize("name", ["FT (sentence)", "FT (+ paraphrases)", "LoRA (merged)", "context distillation",
                                  "LoRA patches (task arithmetic)", "MEMIT (at once)", "AlphaEdit"])
def test_new_contestants_update_and_leave_the_zoo_model_unchanged(wlm, W, bench, changes, name):
    before = scorer.weights_hash(wlm.model)
    c = arena.make(name, bench)
    card = scorer.score(c, wlm.tokenizer, W, changes[:2], arena.CONTESTANTS[name].access)
    assert scorer.weights_hash(wlm.model) == before and card.reversible == 1.0
    assert card.efficacy >= 0.5 and card.bytes_added > 0 and card.seconds_per_update > 0


def test_the_registry_covers_every_family_of_the_survey():
    families = {c.family for c in arena.CONTESTANTS.values()}
    assert families == {"model tuning", "database augmentation", "model distillation", "model reuse",
                        "meta learning", "model editing"}
    assert len(arena.CONTESTANTS) >= 12


def test_lora_patch_is_the_merged_low_rank_change(wlm, changes):
    """The change a LoRA patch returns has rank <= r per weight, and the patch counts its factors."""
    from lfmlab.arena import finetune

    cfg = finetune.LoraPatchConfig(rank=2, steps=3)
    deltas, stored, losses = finetune.lora_patch(wlm.model, wlm.tokenizer, [changes[0].sentence], cfg)
    assert deltas and len(losses) == 3 and losses[-1] < losses[0]
    for d in deltas.values():
        assert torch.linalg.matrix_rank(d.double(), atol=1e-7) <= 2
    per = {n: p for n, p in wlm.model.named_parameters()}
    assert stored == sum(2 * (per[n].shape[0] + per[n].shape[1]) * 4 for n in deltas)


def test_task_arithmetic_patches_do_not_depend_on_each_other(wlm, W, bench, changes):
    """Task arithmetic: each patch is trained on the unedited model, so the sum is order-free;
    the continual LoRA trains each on the model holding the earlier ones, so it is not."""
    def total(name, order):
        c = arena.make(name, bench)
        for u in order:
            c.add(u)
        return c.deltas
    a, b = total("LoRA patches (task arithmetic)", changes[:2]), total("LoRA patches (task arithmetic)",
                                                                        changes[1::-1])
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    a, b = total("LoRA (merged)", changes[:2]), total("LoRA (merged)", changes[1::-1])
    assert not all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_context_distillation_teacher_reads_the_context(wlm, W, changes):
    """The teacher's log-probs equal the model's on (context + text), aligned to the text's positions."""
    from lfmlab.core.lm import encode_prompt, right_pad
    from lfmlab.distill import context_distillation as cd

    tok, u = wlm.tokenizer, changes[0]
    ids, mask = right_pad([encode_prompt(tok, s) for s in u.more_sentences], tok.pad_token_id or 0)
    teacher = cd.teacher_logprobs(wlm.model, tok, u.sentence, ids, mask)
    ctx = encode_prompt(tok, u.sentence)
    row = ids[0, :int(mask[0].sum())].tolist()
    full = torch.tensor([ctx + row[1:]])
    want = wlm.model(input_ids=full).logits.float().log_softmax(-1)[0, len(ctx) - 1:]
    assert torch.allclose(teacher[0, :len(row)], want, atol=1e-5)
    with pytest.raises(ValueError, match="transfer set is empty"):
        cd.distill(wlm.model, tok, u.sentence, [])
    with pytest.raises(ValueError, match="steps >= 1"):
        cd.distill(wlm.model, tok, u.sentence, ["x"], cd.ContextDistillConfig(steps=0))


def test_memit_at_once_counts_its_solve_and_forgets_it(wlm, W, bench, changes):
    c = arena.make("MEMIT (at once)", bench)
    for u in changes:
        c.add(u)
    assert c.deltas == {} and c.footprint() == 0       # nothing is solved before commit
    c.commit()
    assert c.footprint() > 0
    c.clear()
    assert c.footprint() == 0 and c.pending == []


def test_access_filter_and_leaderboard(wlm, W, changes):
    from lfmlab.arena import board

    assert board.needs_at_most("text only", "weights and gradients")
    assert not board.needs_at_most("weights only", "output scores")
    with pytest.raises(ValueError, match="unknown access level"):
        board.needs_at_most("text only", "an API")
    cards = [scorer.score(Nothing(wlm.model), wlm.tokenizer, W, changes[:1], a) for a in scorer.ACCESS]
    assert [c.access for c in board.usable(cards, "output scores")] == ["output scores", "text only"]
    rows = board.rows(cards)
    assert rows[0]["score"] == pytest.approx((0.0 + 0.0 + 1.0) / 3) and rows[0]["family"] == "—"
    with pytest.raises(ValueError, match="cannot sort"):
        board.rows(cards, "height")


def test_board_and_typed_updates_refuse_bad_input(wlm, W, bench):
    from lfmlab.arena import board

    with pytest.raises(ValueError, match="no contestant chosen"):
        board.run(bench, "change", [], 2)
    with pytest.raises(KeyError, match="unknown contestant"):
        board.run(bench, "change", ["Rome"], 2)
    with pytest.raises(ValueError, match="unknown job"):
        board.run(bench, "forget", ["ROME"], 2)
    with pytest.raises(ValueError, match="sizes must be"):
        board.scale(bench, "change", ["ROME"], [0, 10])
    with pytest.raises(ValueError, match="unknown subject"):
        jobs.typed(W, "Atlantis", "capital", "Quito")
    with pytest.raises(ValueError, match="unknown relation"):
        jobs.typed(W, "Peru", "mayor", "Quito")
    lima = next(f.object for f in W.facts_of(split="train") if f.subject == "Peru" and f.relation == "capital")
    with pytest.raises(ValueError, match="already says"):
        jobs.typed(W, "Peru", "capital", lima)
    with pytest.raises(ValueError, match="empty"):
        jobs.typed(W, "Peru", "capital", "  ")
    u = jobs.typed(W, "Peru", "capital", "Quito")
    assert u.request.target_new == "Quito" and u.job == "change" and u.subject == "Peru"


def _record_templates(W, monkeypatch):
    """Every train template index ``W.prompt`` is asked for (strings mapped to their index)."""
    used = []
    real = type(W).prompt

    def prompt(self, subject, relation, template=0, split="train"):
        if split == "train":
            ts = self.templates[relation]["train"]
            used.append(ts.index(template) if isinstance(template, str) else int(template))
        return real(self, subject, relation, template, split)
    monkeypatch.setattr(type(W), "prompt", prompt)
    return used


def test_trained_editors_never_train_on_graded_templates(wlm, W, monkeypatch):
    """MEND's edits and SERAC's scope pairs and counterfactual prompts use train templates 1 and up:
    template 0 grades the neighbourhood and same-subject prompts (as IKE and GRACE, notebook 07)."""
    import random

    from lfmlab.editing import mend, serac

    used = _record_templates(W, monkeypatch)
    mend._examples(W, random.Random(0), 200, set())
    assert used and min(used) >= W.UNSCORED_TEMPLATE
    used.clear()
    serac.train_counterfactual(wlm.model, wlm.tokenizer, W, steps=2, batch=8)
    assert used and min(used) >= W.UNSCORED_TEMPLATE
    used.clear()
    encoder = SimpleNamespace(model=None, tokenizer=None)
    monkeypatch.setattr(serac, "embed", lambda m, t, texts: torch.zeros(len(texts), 4))
    serac.train_scope(encoder, W, n_facts=50, steps=1)
    assert used and min(used) >= W.UNSCORED_TEMPLATE


def test_leaderboard_puts_lower_costs_first_and_nan_last(wlm, W, changes):
    from lfmlab.arena import board

    cards = [scorer.score(Nothing(wlm.model), wlm.tokenizer, W, changes[:1], "text only") for _ in range(3)]
    cards[0].seconds_per_update, cards[1].seconds_per_update, cards[2].seconds_per_update = 2.0, float("nan"), 1.0
    assert [r["seconds_per_update"] for r in board.rows(cards, "seconds_per_update")][:2] == [1.0, 2.0]
    cards[0].efficacy, cards[2].efficacy = 0.5, 1.0
    assert board.rows(cards, "efficacy")[0]["efficacy"] == 1.0


def test_read_after_refuses_an_input_longer_than_the_model_reads(wlm):
    from lfmlab import validate
    from lfmlab.core.lm import context_limit
    from lfmlab.editing.base import read_after

    n = context_limit(wlm.model) + 1
    ids = torch.ones(1, n, dtype=torch.long)
    with pytest.raises(validate.BadValue, match="at most"):
        read_after(wlm.model, wlm.tokenizer, [[wlm.tokenizer.bos_token_id, 5]], ids, torch.ones_like(ids),
                   torch.zeros(1, n, 8))
