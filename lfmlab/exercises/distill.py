"""Exercises of notebook 04 (distillation): the KD loss with temperature, and DeepInversion's
BatchNorm-statistics loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.exercises.core import Exercise

SECTION = "04"


def kd_loss_reference(student_logits, teacher_logits, temperature):
    from lfmlab.distill.common import kd_loss

    return kd_loss(student_logits, teacher_logits, temperature)


def bn_loss_reference(h, running_mean, running_var, eps):
    from lfmlab.core.inversion import bn_statistics

    bn = nn.BatchNorm2d(h.shape[1], eps=eps) if h.dim() == 4 else nn.BatchNorm1d(h.shape[1], eps=eps)
    bn.running_mean.copy_(running_mean)
    bn.running_var.copy_(running_var)
    bn.eval()
    with bn_statistics(bn) as terms:
        bn(h)
    return terms[0]


def _kd_cases():
    for seed, (b, c, t) in enumerate([(4, 10, 4.0), (3, 5, 2.0), (6, 3, 1.0), (2, 7, 8.0)]):
        g = torch.Generator().manual_seed(seed)
        yield dict(student_logits=torch.randn(b, c, generator=g) * 3,
                   teacher_logits=torch.randn(b, c, generator=g) * 3, temperature=t)


def _kl_terms(student_logits, teacher_logits, temperature):
    log_s = F.log_softmax(student_logits / temperature, -1)
    log_t = F.log_softmax(teacher_logits / temperature, -1)
    return log_t.exp() * (log_t - log_s)                                   # [B, C]


def _bn_cases():
    for seed, shape in enumerate([(8, 3, 4, 4), (5, 4), (6, 2, 3, 5)]):
        g = torch.Generator().manual_seed(seed)
        c = shape[1]
        yield dict(h=torch.randn(*shape, generator=g) * 2 + 1, running_mean=torch.randn(c, generator=g),
                   running_var=torch.rand(c, generator=g) + 0.1, eps=1e-5)


def _dims(h):
    return [0] + list(range(2, h.dim()))


KD_LOSS = Exercise(
    name="kd_loss", section=SECTION, title="The distillation loss with temperature", difficulty=1,
    minutes=10,
    equation=r"\mathcal{L}_{KD} = T^2\, \mathrm{KL}\big(\mathrm{softmax}(z_t / T)\,\|\,"
             r"\mathrm{softmax}(z_s / T)\big)",
    stub='''def kd_loss(student_logits, teacher_logits, temperature):
    """Hinton et al. (2015): the KL divergence from the teacher's softened distribution to the
    student's, both at temperature T, times T² (so that the gradients keep their size as T grows),
    averaged over the batch. Logits [B, C] -> a scalar.
    """
''',
    body='''    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)    # [B]
    return kl.mean() * t * t
''',
    hints=("Soften both: log_softmax(logits / T). KL(p_t || p_s) = Σ p_t (log p_t − log p_s), "
           "summed over classes, then averaged over the batch.",
           "Multiply by T²: the softened gradients shrink as 1/T², and this undoes it."),
    reference=kd_loss_reference, cases=_kd_cases,
    mistakes={
        "the T² factor is missing: the softened gradients shrink as 1/T², and T² restores their size":
            lambda student_logits, teacher_logits, temperature: F.kl_div(
                F.log_softmax(student_logits / temperature, -1), F.log_softmax(teacher_logits / temperature, -1),
                log_target=True, reduction="batchmean"),
        "the KL is the wrong way round: KD uses KL(teacher ‖ student), the teacher's distribution "
        "weighing the log-ratio":
            lambda student_logits, teacher_logits, temperature: F.kl_div(
                F.log_softmax(teacher_logits / temperature, -1), F.log_softmax(student_logits / temperature, -1),
                log_target=True, reduction="batchmean") * temperature ** 2,
        "a wrong reduction: sum the KL over classes and average over the batch only "
        "(reduction='batchmean', not 'mean')":
            lambda student_logits, teacher_logits, temperature: _kl_terms(
                student_logits, teacher_logits, temperature).mean() * temperature ** 2,
    },
)


def _bn_wrong(h, running_mean, running_var, eps, unbiased=False, std=True, reduce=torch.sum):
    mean, var = h.mean(_dims(h)), h.var(_dims(h), unbiased=unbiased)
    if std:
        spread, target = (var + eps).sqrt(), (running_var + eps).sqrt()
    else:
        spread, target = var, running_var
    return reduce((mean - running_mean) ** 2) + reduce((spread - target) ** 2)


BN_LOSS = Exercise(
    name="bn_loss", section=SECTION, title="DeepInversion's BatchNorm-statistics loss", difficulty=2,
    minutes=15,
    equation=r"\mathcal{R}_{feature}(\hat x) = \big\|\mu(\hat x) - \mathbb{E}[\mu]\big\|_2^2"
             r" + \big\|\sigma(\hat x) - \mathbb{E}[\sigma]\big\|_2^2"
             r"\quad\text{(lfmlab's form of eq. 4: the paper compares variances with plain norms)}",
    stub='''def bn_loss(h, running_mean, running_var, eps):
    """One BatchNorm layer's term of DeepInversion's feature loss, in lfmlab's form of Yin et al.
    (2020), eq. 4: standard deviations and squared norms (the paper writes variances and plain L2
    norms; both pull the batch's statistics onto the stored ones).

    h [N, C, ...]: the layer's input for a batch of synthetic images; running_mean,
    running_var [C]: the statistics the layer stored in training; eps: its ε. The batch's
    per-channel mean and standard deviation (over every dimension but the channel; the biased
    variance, as BatchNorm uses) against the stored ones. Returns a scalar.
    """
''',
    body='''    dims = [0] + list(range(2, h.dim()))                 # all but the channel
    mean = h.mean(dims)
    std = (h.var(dims, unbiased=False) + eps).sqrt()
    stored_std = (running_var + eps).sqrt()
    return ((mean - running_mean) ** 2).sum() + ((std - stored_std) ** 2).sum()
''',
    hints=("Per-channel statistics: reduce over dims [0, 2, 3, ...], everything but dim 1.",
           "σ = sqrt(var(unbiased=False) + ε), compared with sqrt(running_var + ε); add the two "
           "squared-error sums."),
    reference=bn_loss_reference, cases=_bn_cases,
    mistakes={
        "the unbiased variance: BatchNorm's batch statistics use the biased one (unbiased=False)":
            lambda **kw: _bn_wrong(**kw, unbiased=True),
        "variances compared (as the paper writes eq. 4); this loss, lfmlab's form, compares standard "
        "deviations, sqrt(var + ε)":
            lambda **kw: _bn_wrong(**kw, std=False),
        "a mean over channels; this loss sums the squared differences over channels (a squared L2 "
        "norm)":
            lambda **kw: _bn_wrong(**kw, reduce=torch.mean),
    },
)

def gjsd_reference(student_logits, teacher_logits, beta):
    from lfmlab.distill.gkd import generalized_jsd

    return generalized_jsd(student_logits, teacher_logits, beta)


def _gjsd_cases():
    for seed, (b, t, v, beta) in enumerate([(2, 3, 6, 0.5), (3, 2, 5, 0.1), (1, 4, 8, 0.9)]):
        g = torch.Generator().manual_seed(seed)
        yield dict(student_logits=torch.randn(b, t, v, generator=g) * 2,
                   teacher_logits=torch.randn(b, t, v, generator=g) * 2, beta=beta)


def _kl(log_p, log_q):
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _gjsd_wrong(student_logits, teacher_logits, beta, mix="probs", swap=False):
    s, t = F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1)
    if swap:
        s, t = t, s
    if mix == "probs":
        m = torch.log(beta * t.exp() + (1 - beta) * s.exp())
    else:
        m = F.log_softmax(beta * teacher_logits + (1 - beta) * student_logits, -1)
    return (beta * _kl(t, m) + (1 - beta) * _kl(s, m)).mean()


GJSD = Exercise(
    name="generalized_jsd", section=SECTION, title="GKD's generalised Jensen-Shannon divergence",
    difficulty=2, minutes=15,
    equation=r"D_{JSD(\beta)}(P \| Q) = \beta\, \mathrm{KL}(P \| M) + (1 - \beta)\, "
             r"\mathrm{KL}(Q \| M),\quad M = \beta P + (1 - \beta) Q",
    stub='''def generalized_jsd(student_logits, teacher_logits, beta):
    """GKD's divergence (Agarwal et al. 2024, eq. 1) between the teacher P and the student Q.

    Logits [..., V] (the last dimension is the vocabulary); 0 < β < 1. M is the mixture of the two
    *distributions* (not of the logits). Returns the divergence averaged over all positions (every
    dimension but the last): a scalar. β near 0 behaves like forward KL(P ‖ Q), near 1 like reverse.
    """
''',
    body='''    log_p = F.log_softmax(teacher_logits, dim=-1)
    log_q = F.log_softmax(student_logits, dim=-1)
    log_m = torch.log(beta * log_p.exp() + (1 - beta) * log_q.exp())

    def kl(log_a, log_b):
        return (log_a.exp() * (log_a - log_b)).sum(-1)

    return (beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)).mean()
''',
    hints=("P = softmax(teacher_logits), Q = softmax(student_logits), M = β P + (1 − β) Q, all over "
           "the last dimension.",
           "KL(A ‖ M) = Σ A (log A − log M) over the vocabulary; weigh the teacher's KL by β and the "
           "student's by 1 − β, then average over positions."),
    reference=gjsd_reference, cases=_gjsd_cases,
    mistakes={
        "the mixture was taken of the logits; M mixes the distributions: M = β P + (1 − β) Q":
            lambda **kw: _gjsd_wrong(**kw, mix="logits"),
        "teacher and student swapped: P (weighted by β) is the teacher, Q the student":
            lambda **kw: _gjsd_wrong(**kw, swap=True),
        "β ignored: that is the symmetric JSD (β = 0.5); the generalised one weighs KL(P ‖ M) by β and "
        "KL(Q ‖ M) by 1 − β, with M = β P + (1 − β) Q":
            lambda student_logits, teacher_logits, beta: _gjsd_wrong(student_logits, teacher_logits, 0.5),
    },
)

EXERCISES = [KD_LOSS, BN_LOSS, GJSD]
