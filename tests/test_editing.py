"""Model editing on the committed world-lm: each editor does what its paper says, bad requests
change nothing, and no editor leaves the model changed."""
import pytest
import torch

from lfmlab import zoo
from lfmlab.core import lm
from lfmlab.core.hooks import capture
from lfmlab.data.world import EditRequest
from lfmlab.editing import (
    bench,
    covariance,
    ft,
    grace,
    ike,
    kn,
    memit,
    mend,
    metrics,
    rome,
    serac,
)
from lfmlab.editing.base import BadRequest, applied, as_edit, copy_with, validate


@pytest.fixture(scope="module")
def requests(W):
    return W.edit_requests(4, seed=11)


@pytest.fixture(scope="module")
def ref(wlm, requests):
    return metrics.reference(wlm.model, wlm.tokenizer, requests)


@pytest.fixture(scope="module")
def cov(wlm):
    return covariance.key_covariance(wlm.model, wlm.tokenizer, 0)


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(model, snap):
    return all(torch.equal(snap[n], p) for n, p in model.named_parameters())


def test_applied_restores_the_model_even_after_an_error(wlm):
    snap = snapshot(wlm.model)
    name = "transformer.h.0.mlp.c_proj.weight"
    with pytest.raises(RuntimeError):
        with applied(wlm.model, {name: torch.ones_like(snap[name])}):
            assert not torch.equal(dict(wlm.model.named_parameters())[name], snap[name])
            raise RuntimeError("boom")
    assert unchanged(wlm.model, snap)


def test_rome_writes_one_rank_one_association(wlm, requests, cov):
    model, tok, r = wlm.model, wlm.tokenizer, requests[0]
    snap = snapshot(model)
    res = rome.edit(model, tok, r, rome.RomeConfig(), cov=cov)
    assert unchanged(model, snap), "ROME must not change the model it was given"
    (name, delta), = res.deltas.items()
    assert name == zoo.layers(model).mlp_out_name(0) + ".weight"
    sv = torch.linalg.svdvals(delta.double())
    assert sv[1] / sv[0] < 1e-5  # rank one, up to float32 rounding
    before = metrics.pair_stats(model, tok, [r.prompt] * 2, [r.target_new, r.target_true]).logprob
    with applied(model, res.deltas):
        after = metrics.pair_stats(model, tok, [r.prompt] * 2, [r.target_new, r.target_true]).logprob
    assert before[0] < before[1] and after[0] > after[1]  # P(new) overtakes P(true)
    assert unchanged(model, snap)


def test_rome_maps_the_bare_prompt_key_to_the_optimised_value(wlm, requests, cov):
    model, tok, r = wlm.model, wlm.tokenizer, requests[1]
    cfg = rome.RomeConfig(v_steps=20)
    prefixes = rome.random_prefixes(model, tok, 3, (5,), seed=0)
    res = rome.edit(model, tok, r, cfg, cov=cov, prefixes=prefixes)
    name = zoo.layers(model).mlp_out_name(0)
    pos = rome._positions(tok, [r.prompt], r.subject, [0])[0]
    ids = torch.tensor([lm.encode_prompt(tok, r.prompt)])
    v_star, _, _ = rome.compute_value(model, tok, r, prefixes, cfg)
    with applied(model, res.deltas), capture(model, [name]) as seen, torch.no_grad():
        model(input_ids=ids)
    assert torch.allclose(seen[name][0, pos], v_star, atol=1e-3)


def test_ft_l_respects_its_norm_bound_and_ft_hurts_neighbours_more_than_rome(wlm, requests, ref, cov):
    model, tok = wlm.model, wlm.tokenizer
    res = ft.edit(model, tok, requests[0], ft.FTL(linf=2e-3))
    assert max(d.abs().max().item() for d in res.deltas.values()) <= 2e-3 + 1e-7
    s_ft, _ = bench.single(model, tok, requests, lambda r: ft.edit(model, tok, r), ref)
    s_rome, _ = bench.single(model, tok, requests, lambda r: rome.edit(model, tok, r, rome.RomeConfig(), cov=cov), ref)
    assert s_ft.efficacy == 1.0 and s_rome.efficacy >= 0.75
    assert s_ft.neighbourhood < s_rome.neighbourhood - 0.2


def test_kn_edits_only_the_located_neurons(wlm, requests):
    model, tok = wlm.model, wlm.tokenizer
    res = kn.edit(model, tok, requests[2])
    neurons = res.info["neurons"]
    touched = {(int(name.split(".")[2]), int(i)) for name, d in res.deltas.items()
               for i in (d.abs().sum(1) > 0).nonzero().flatten()}
    assert touched == set(neurons)


def test_memit_edits_a_batch_in_the_chosen_layers(wlm, W, cov):
    model, tok = wlm.model, wlm.tokenizer
    reqs = W.edit_requests(6, seed=5)
    ref = metrics.reference(model, tok, reqs)
    snap = snapshot(model)
    cfg = memit.MemitConfig(edit_layers=(0, 1))
    prefixes = rome.random_prefixes(model, tok, 5, seed=0)
    z = memit.targets(model, tok, reqs, cfg, prefixes)  # [6, d], reusable for any subset
    with pytest.raises(ValueError, match="targets"):
        memit.edit(model, tok, reqs[:3], cfg, covs={0: cov}, prefixes=prefixes, z=z)
    res = memit.edit(model, tok, reqs, cfg, covs={0: cov}, prefixes=prefixes, z=z)
    assert set(res.deltas) == {f"transformer.h.{l}.mlp.c_proj.weight" for l in (0, 1)}
    assert unchanged(model, snap)
    with applied(model, res.deltas):
        scores = metrics.evaluate(model, tok, reqs, ref)
    assert scores.efficacy >= 0.8 and scores.neighbourhood >= 0.8
    # spill-over: the update moves the edited subjects' hidden states, others' much less
    edited = {r.subject for r in reqs}
    others = [(W.prompt(f.subject, f.relation), f.subject) for f in W.facts_of(split="train")
              if f.subject not in edited][:12]
    s = memit.spill(model, tok, res.deltas, reqs, others, top=1)
    assert s["edited"] > 0.2 and s["ratio"] < 0.5, s
    assert unchanged(model, snap)


def test_an_untrained_mend_is_one_gradient_step(wlm, requests, W):
    """MEND starts as the identity editor: ΔW = -η Σ_t u_t δ_tᵀ = -η ∇_W L."""
    model, tok, r = wlm.model, wlm.tokenizer, requests[0]
    editor = mend.Mend(model, mend.MendConfig(edit_layers=(0,)))
    name = "transformer.h.0.mlp.c_proj.weight"
    for ed in editor.editors:  # identity normalisation
        ed.mu.zero_()
        ed.sigma.fill_(1.0)
    delta = editor.edit(model, tok, r).deltas[name]
    b = lm.pair_batch(tok, [r.prompt], [r.target_new])
    weight = dict(model.named_parameters())[name]
    (grad,) = torch.autograd.grad(model(input_ids=b.input_ids, labels=b.labels).loss, [weight])
    eta = editor.editors[0].log_eta.exp().item()
    assert torch.allclose(delta, -eta * grad, atol=1e-6, rtol=1e-4)


def test_mend_training_batch_gives_each_edit_its_own_loss_and_gradient(wlm, W):
    """The batched training loss (every edit of a step in the same passes, row i with W + ΔW_i)
    equals the per-edit computation (one edit at a time, its edited weights through
    functional_call), and so do the editors' gradients; padding changes nothing."""
    import random

    import torch.nn.functional as F
    from torch.func import functional_call

    model, tok = wlm.model, wlm.tokenizer
    torch.manual_seed(0)
    editor = mend.Mend(model, mend.MendConfig(edit_layers=(0, 1)))
    for ed in editor.editors:   # a trained-looking editor: non-zero second layers
        for block in ed.blocks:
            torch.nn.init.normal_(block.up.weight, std=0.05)
        ed.log_eta.data.fill_(-4.0)
    examples = mend._examples(W, random.Random(3), 5, set())
    params = dict(model.named_parameters())

    def alone(ex):
        prompt, eq, new, loc, loc_obj = ex
        deltas = editor.deltas(model, tok, prompt, new)
        edited = {n: params[n] + d for n, d in deltas.items()}
        b_eq, b_loc = lm.pair_batch(tok, [eq], [new]), lm.pair_batch(tok, [loc], [loc_obj])
        l_edit = functional_call(model, edited, args=(), kwargs=dict(
            input_ids=b_eq.input_ids, attention_mask=b_eq.attention_mask, labels=b_eq.labels)).loss
        with torch.no_grad():
            p_base = model(input_ids=b_loc.input_ids).logits.log_softmax(-1)
        p_new = functional_call(model, edited, args=(), kwargs=dict(input_ids=b_loc.input_ids)).logits
        l_loc = F.kl_div(p_new.log_softmax(-1), p_base, log_target=True, reduction="none").sum(-1).mean()
        return 0.5 * l_edit + l_loc

    reference = sum(alone(ex) for ex in examples) / len(examples)
    ref_grads = torch.autograd.grad(reference, list(editor.parameters()))
    batched = mend._batch_loss(model, tok, editor, examples, 0.5)
    grads = torch.autograd.grad(batched, list(editor.parameters()))
    assert torch.allclose(batched, reference, rtol=1e-5, atol=1e-6), (batched.item(), reference.item())
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-6)


def test_serac_leaves_out_of_scope_inputs_to_the_base_model(wlm, W, requests):
    model, tok = wlm.model, wlm.tokenizer
    encoder = zoo.load("minilm", device="cpu")
    clf, report = serac.train_scope(encoder, W, n_facts=120, steps=150, exclude_subjects={r.subject for r in requests})
    assert report.accuracy > 0.9
    wrapped = serac.Serac(model, tok, encoder, clf, counterfactual=model)
    r = requests[0]
    wrapped.add(r)
    _, prob = wrapped.scope([r.prompt, r.paraphrase_prompts[0], r.neighbourhood[0][0]])
    assert prob[0] > 0.5 and prob[2] < 0.5
    far = lm.pair_batch(tok, [r.neighbourhood[0][0]], [r.neighbourhood[0][1]])
    routed = wrapped(input_ids=far.input_ids, attention_mask=far.attention_mask, prompt_len=far.prompt_len).logits
    assert torch.equal(routed, model(input_ids=far.input_ids, attention_mask=far.attention_mask).logits)


def test_grace_edits_by_codebook_and_clear_restores(wlm, W, requests):
    model, tok = wlm.model, wlm.tokenizer
    g = grace.Grace(model, tok, grace.GraceConfig(layer=3))
    try:
        g.calibrate([W.prompt(f.subject, f.relation) for f in W.facts_of(split="train")[:100]], share=0.25)
        r = requests[0]
        ids = lm.pair_batch(tok, [r.neighbourhood[0][0]], [r.neighbourhood[0][1]])
        base = model(input_ids=ids.input_ids).logits
        g.add(r)
        s = metrics.pair_stats(g, tok, [r.prompt] * 2, [r.target_new, r.target_true]).logprob
        assert s[0] > s[1]
        assert torch.allclose(g(input_ids=ids.input_ids).logits, base)  # far from the key: untouched
        g.clear()
        s = metrics.pair_stats(g, tok, [r.prompt] * 2, [r.target_new, r.target_true]).logprob
        assert s[0] < s[1]
    finally:
        g.remove()


@pytest.mark.parametrize("change, message", [
    (dict(prompt="  "), "empty"),
    (dict(subject="Atlantis"), "does not occur"),
    (dict(target_new="Lima"), "equals the current one"),
    (dict(target_new="  "), "empty"),
])
def test_bad_requests_are_refused_with_a_fix(wlm, change, message):
    good = dict(subject="Peru", relation="capital", prompt="The capital of Peru is", target_true="Lima",
                target_new="Quito", paraphrase_prompts=(), neighbourhood=(), same_subject=())
    with pytest.raises(BadRequest, match=message):
        validate(wlm.tokenizer, EditRequest(**{**good, **change}))


def test_world_edit_request_rejects_unknown_subjects_and_no_op_edits(W):
    with pytest.raises(KeyError, match="did you mean 'Peru'"):
        W.edit_request("Peruu", "capital", "Quito")
    with pytest.raises(ValueError, match="already has"):
        W.edit_request("Peru", "capital", "Lima")


def test_copy_with_leaves_the_original_alone(wlm):
    name = "transformer.h.0.mlp.c_proj.weight"
    snap = snapshot(wlm.model)
    edited = copy_with(wlm.model, {name: torch.ones_like(snap[name])})
    assert unchanged(wlm.model, snap)
    assert torch.equal(dict(edited.named_parameters())[name], snap[name] + 1)


def _junk_exam(r):
    """The same edit, with every grading prompt replaced by junk."""
    import dataclasses
    junk = ("zzz qqq", "xx")
    return dataclasses.replace(r, paraphrase_prompts=("zzz qqq",) * 2, neighbourhood=(junk,) * 3,
                               same_subject=(junk,) * 3)


def test_editors_never_read_the_exam(wlm, requests, cov):
    """An editor sees the edit only (base.as_edit): junk exam fields give identical deltas."""
    model, tok, r = wlm.model, wlm.tokenizer, requests[0]
    prefixes = rome.random_prefixes(model, tok, 2, (5,), seed=0)
    cfg = rome.RomeConfig(v_steps=5, anchor_same_subject=True)
    editors = {
        "ROME + anchors": lambda q: rome.edit(model, tok, q, cfg, cov=cov, prefixes=prefixes),
        "KN": lambda q: kn.edit(model, tok, q, kn.KNConfig(ig_steps=4)),
        "FT": lambda q: ft.edit(model, tok, q, ft.FTConfig(steps=3)),
    }
    for name, editor in editors.items():
        a, b = editor(r).deltas, editor(_junk_exam(r)).deltas
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a), name


def test_as_edit_keeps_the_edit_and_drops_the_exam(wlm, requests):
    from lfmlab.editing.base import Edit, as_edit
    r = requests[0]
    e = as_edit(wlm.tokenizer, r)
    assert e == Edit(r.subject, r.relation, r.prompt, r.target_true, r.target_new)
    assert not hasattr(e, "paraphrase_prompts") and not hasattr(e, "neighbourhood")
    with pytest.raises(BadRequest):
        as_edit(wlm.tokenizer, Edit("Peru", "capital", "The capital of Peru is", "Lima", "Lima"))


def test_kn_attributes_at_the_subject_and_changes_weights(wlm, requests):
    """Dai et al.'s last-token attribution finds generic neurons on world-lm; at the subject's
    last token (the default, a stated deviation) KN finds neurons and edits."""
    model, tok = wlm.model, wlm.tokenizer
    found = [bool(kn.edit(model, tok, r).info["neurons"]) for r in requests]
    assert sum(found) >= len(requests) - 1


def test_length_normalised_efficacy_is_an_option(wlm, requests, ref):
    model, tok, r = wlm.model, wlm.tokenizer, requests[0]
    a = metrics.score_one(model, tok, r, ref.neighbour_argmax[0], ref.same_subject_hit[0])
    b = metrics.score_one(model, tok, r, ref.neighbour_argmax[0], ref.same_subject_hit[0], length_normalised=True)
    assert a["neighbourhood"] == b["neighbourhood"] and a["efficacy"] in (0.0, 1.0) and b["efficacy"] in (0.0, 1.0)


def test_an_error_inside_an_editor_restores_the_models_mode(wlm, requests, cov, monkeypatch):
    model, tok = wlm.model, wlm.tokenizer

    def broken(*args, **kwargs):
        raise RuntimeError("in the middle of the edit")

    monkeypatch.setattr(rome, "compute_values", broken)        # ROME and MEMIT both optimise through it
    for call in (lambda: rome.edit(model, tok, requests[0], rome.RomeConfig(), cov=cov),
                 lambda: memit.edit(model, tok, requests[:1], memit.MemitConfig(edit_layers=(0,)), covs={0: cov})):
        model.train()
        try:
            with pytest.raises(RuntimeError, match="middle"):
                call()
            assert model.training
        finally:
            model.eval()


def test_batched_values_follow_each_requests_own_path(wlm, requests):
    model, tok = wlm.model, wlm.tokenizer
    prefixes = rome.random_prefixes(model, tok, 4)
    cfg = rome.RomeConfig(v_steps=25)
    together, v, infos = rome.compute_values(model, tok, requests[:3], prefixes, cfg)
    for r, vs, v0, info in zip(requests[:3], together, v, infos):
        alone, v_alone, info_alone = rome.compute_value(model, tok, r, prefixes, cfg)
        assert info["steps"] == info_alone["steps"] and torch.allclose(v0, v_alone, atol=1e-5)
        assert float((vs - alone).norm() / alone.norm()) < 1e-4


# ---- one Editor interface and the registry ----------------------------------------------------

def _wins(model, tok, r):
    new = metrics.pair_stats(model, tok, [r.prompt], [r.target_new]).logprob
    old = metrics.pair_stats(model, tok, [r.prompt], [r.target_true]).logprob
    return bool(new > old)


def test_the_registry_builds_every_cheap_editor_and_each_one_edits_and_restores(wlm, W, requests, cov):
    from lfmlab import editing
    from lfmlab.core.registry import MethodInfo

    model, tok, r = wlm.model, wlm.tokenizer, requests[0]
    assert all(isinstance(m, MethodInfo) and m.notebook == "07_model_editing" for m in editing.METHODS.values())
    bench_ = editing.Workbench(model, tok, W, layer=0, covariances={0: cov})
    eds = editing.editors(bench_, {"ROME": None, "FT-L": None, "GRACE": grace.GraceConfig(layer=3),
                                   "T-Patcher": None, "IKE": ike.IKEConfig(k=0)})
    assert list(eds) == ["FT-L", "ROME", "T-Patcher", "IKE", "GRACE"]          # registry order
    snap = snapshot(model)
    assert not _wins(model, tok, r)
    for name, ed in eds.items():                           # no branch on the editor's kind
        with ed.applied(r) as edited:
            assert _wins(edited, tok, r), name
        assert unchanged(model, snap) and not _wins(model, tok, r), name
    with pytest.raises(KeyError, match="unknown editors"):
        editing.editors(bench_, {"ROME2": None})


def test_a_delta_editor_stacks_sequential_edits_and_clear_forgets_them(wlm, W, requests, cov):
    from lfmlab import editing

    model, tok = wlm.model, wlm.tokenizer
    ed = editing.editors(editing.Workbench(model, tok, W, covariances={0: cov}), {"ROME": None})["ROME"]
    snap = snapshot(model)
    for q in requests[:2]:
        ed.add(q)
    with ed.edited() as edited:
        assert all(_wins(edited, tok, q) for q in requests[:2])
    assert unchanged(model, snap)
    ed.clear()
    with ed.edited() as edited:
        assert not any(_wins(edited, tok, q) for q in requests[:2])


def test_as_editor_wraps_functions_and_memories_alike(wlm, W, requests):
    from lfmlab.editing import DeltaEditor, MemoryEditor, as_editor
    from lfmlab.editing.base import EditResult

    model, tok = wlm.model, wlm.tokenizer
    assert isinstance(as_editor(model, lambda q: EditResult()), DeltaEditor)
    assert isinstance(as_editor(model, grace.Grace(model, tok)), MemoryEditor)
    with pytest.raises(TypeError, match="not an editor"):
        as_editor(model, 42)


def test_ike_demonstrations_and_grace_calibration_avoid_the_graded_template(wlm, W):
    """Neighbourhood and same-subject prompts are graded under train template 0: IKE's
    demonstrations and GRACE's ε calibration use the other train templates only."""
    request = W.edit_requests(6, seed=3)[0]
    graded = {W.prompt(f.subject, f.relation, 0) for f in W.facts_of(request.relation, split="train")}
    for seed in range(5):
        for demo in ike.demonstrations(W, as_edit(wlm.tokenizer, request), 6, seed=seed):
            assert not any(f"{p} " in demo for p in graded), demo
    every = {W.prompt(f.subject, f.relation, 0) for f in W.facts_of(split="train")}
    assert not every & set(grace.calibration_prompts(W))
