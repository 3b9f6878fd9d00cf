"""GKD (lfmlab.distill.gkd): the generalised JSD against its definition, the cut-down student,
sampling, and a short run that moves the student towards the teacher without touching either input."""
from __future__ import annotations

import lfmlab  # noqa: F401

# isort: split
import pytest
import torch
import torch.nn.functional as F

from lfmlab import validate
from lfmlab.distill import gkd


def _kl(p_log, q_log):  # KL(P || Q) per row, from log-probabilities
    return (p_log.exp() * (p_log - q_log)).sum(-1)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_is_its_definition(beta):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    P, Q = t.softmax(-1), s.softmax(-1)
    M = beta * P + (1 - beta) * Q
    want = (beta * _kl(P.log(), M.log()) + (1 - beta) * _kl(Q.log(), M.log())).mean()
    assert torch.allclose(gkd.generalized_jsd(s, t, beta), want, atol=1e-6)


def test_generalized_jsd_ends_are_forward_and_reverse_kl_and_its_mask_counts():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    ls, lt = F.log_softmax(s, -1), F.log_softmax(t, -1)
    assert torch.allclose(gkd.generalized_jsd(s, t, 0.0), _kl(lt, ls).mean(), atol=1e-6)
    assert torch.allclose(gkd.generalized_jsd(s, t, 1.0), _kl(ls, lt).mean(), atol=1e-6)
    # the limit β -> 0 of D / β is the forward KL (why β = 0 is read that way)
    assert torch.allclose(gkd.generalized_jsd(s, t, 1e-4) / 1e-4, _kl(lt, ls).mean(), rtol=2e-3)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = mask[1, 3] = True
    want = (_kl(lt, ls)[0, 1] + _kl(lt, ls)[1, 3]) / 2
    assert torch.allclose(gkd.generalized_jsd(s, t, 0.0, mask=mask), want, atol=1e-6)
    # temperature scales both logits; at equal inputs every divergence is 0
    assert float(gkd.generalized_jsd(t, t, 0.5, temperature=2.0)) == pytest.approx(0.0, abs=1e-7)


def test_generalized_jsd_matches_scipy_jensen_shannon_at_one_half():
    from scipy.spatial.distance import jensenshannon

    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 9, generator=g).double(), torch.randn(4, 9, generator=g).double()
    ours = gkd.generalized_jsd(s, t, 0.5)
    ref = torch.tensor([jensenshannon(a, b) ** 2 for a, b in zip(s.softmax(-1).numpy(), t.softmax(-1).numpy())])
    assert torch.allclose(ours.double(), ref.mean(), atol=1e-6)     # scipy returns the square root


@pytest.fixture(scope="module")
def world_lm():
    from lfmlab import zoo

    card = zoo.load("world-lm", device="cpu")
    return card.model, card.tokenizer


def test_shrink_keeps_the_chosen_blocks_and_leaves_the_teacher(world_lm):
    teacher, _ = world_lm
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    small = gkd.shrink(teacher)
    assert len(small.transformer.h) == 3 and small.config.n_layer == 3
    assert torch.equal(small.transformer.h[1].mlp.c_fc.weight, teacher.transformer.h[2].mlp.c_fc.weight)
    assert small.transformer.h[1].mlp.c_fc.weight is not teacher.transformer.h[2].mlp.c_fc.weight
    assert len(gkd.shrink(teacher, (0, 5)).transformer.h) == 2
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="distinct block indices"):
        gkd.shrink(teacher, (0, 9))
    with pytest.raises(ValueError, match="GPT-2 layout"):
        gkd.shrink(torch.nn.Linear(2, 2))


def test_sample_greedy_equals_step_by_step_decoding(world_lm):
    from lfmlab.core.lm import encode_prompt

    teacher, tok = world_lm
    prompts = ["The capital of Peru is", "The chemical symbol of gold is"]
    ids = [encode_prompt(tok, p) for p in prompts]
    out = gkd.sample(teacher, ids, 3, greedy=True)
    for p, o in zip(ids, out):          # one row at a time, no padding
        seq = list(p)
        for _ in range(3):
            seq.append(int(teacher(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
        assert o == seq[len(p):]


def test_a_short_gkd_run_moves_the_student_towards_the_teacher(world_lm):
    from lfmlab.data import world

    teacher, tok = world_lm
    w = world.load()
    facts = w.facts_of("capital", split="train")[:64]
    prompts = [w.prompt(f.subject, f.relation) for f in facts]
    small = gkd.shrink(teacher)
    start = {k: v.clone() for k, v in small.state_dict().items()}
    before = gkd.on_policy_gap(small, teacher, tok, prompts)["divergence"]
    r = gkd.gkd(teacher, small, tok, prompts, gkd.GKDConfig(lam=0.5, beta=0.5, steps=25, lr=2e-3), show=False)
    after = gkd.on_policy_gap(r.student, teacher, tok, prompts)["divergence"]
    assert after < 0.8 * before
    assert len(r.losses) == 25 and 0 < sum(r.on_policy) < 25 and r.teacher_passes == 25
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in start.items())   # the input is unchanged
    assert gkd.agreement(teacher, teacher, tok, prompts) == 1.0


def test_bad_configs_say_what_to_fix(world_lm):
    with pytest.raises(validate.BadValue, match="lam"):
        gkd.GKDConfig(lam=1.5)
    with pytest.raises(validate.BadValue, match="beta"):
        gkd.GKDConfig(beta=float("nan"))
    with pytest.raises(validate.BadValue):
        gkd.GKDConfig(divergence="kl")
    teacher, tok = world_lm
    with pytest.raises(ValueError, match="needs prompts"):
        gkd.gkd(teacher, gkd.shrink(teacher), tok, [])


def _trl_loss():
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (trl is in the dev extra; it moved to
    ``trl.experimental.gkd`` in trl 1.x)."""
    try:
        from trl.experimental.gkd.gkd_trainer import GKDTrainer
    except ImportError:
        from trl.trainer.gkd_trainer import GKDTrainer
    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_agrees_with_trl(beta, temperature):
    trl_loss = _trl_loss()
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 6, 13, generator=g), torch.randn(3, 6, 13, generator=g)
    labels = torch.randint(0, 13, (3, 6), generator=g)
    labels[0, :2] = labels[2, 4:] = -100
    ours = gkd.generalized_jsd(s, t, beta, temperature, mask=labels != -100)
    theirs = trl_loss(s, t, labels=labels, beta=beta, temperature=temperature)
    assert torch.allclose(ours, theirs.float(), rtol=1e-5, atol=1e-7), (float(ours), float(theirs))
