"""Exercises of notebook 07 (model editing): ROME's closed-form rank-one update, and the causal
shift of a language model's target log-probability."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lfmlab.exercises.core import Exercise

SECTION = "07"


def rome_reference(W, bias, C, k_star, k, v_star):
    from lfmlab.editing.rome import rank_one_delta

    return rank_one_delta(W, bias, C, k_star, k, v_star)


def logprob_reference(logits, labels):
    from lfmlab.core.lm import token_logprobs

    return token_logprobs(logits, labels).total


def _rome_cases():
    for seed, (d_in, d_out) in enumerate([(8, 4), (6, 6), (12, 5)]):
        g = torch.Generator().manual_seed(seed)
        keys = torch.randn(50, d_in, generator=g)
        C = keys.T @ keys / 50 + 0.1 * torch.eye(d_in)
        k_star = torch.randn(d_in, generator=g)
        yield dict(W=torch.randn(d_in, d_out, generator=g), bias=torch.randn(d_out, generator=g), C=C,
                   k_star=k_star, k=k_star + 0.1 * torch.randn(d_in, generator=g),
                   v_star=torch.randn(d_out, generator=g))


def _logprob_cases():
    for seed, (b, t, v, start) in enumerate([(2, 6, 7, 3), (3, 5, 4, 1), (1, 8, 10, 5)]):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, v, (b, t), generator=g)
        labels[:, :start] = -100                                    # the prompt: not a target
        yield dict(logits=torch.randn(b, t, v, generator=g) * 2, labels=labels)


def _rome_wrong(W, bias, C, k_star, k, v_star, inverse=True, residual=True, denominator=True):
    u = torch.linalg.solve(C, k_star) if inverse else k_star
    u = u / u.norm()
    right = v_star - (k @ W + bias) if residual else v_star
    if denominator:
        right = right / (k @ u)
    return torch.outer(u, right)


def _logprob_wrong(logits, labels, shift=True, mask=True, log=True):
    lg, lb = (logits[:, :-1], labels[:, 1:]) if shift else (logits, labels)
    is_target = lb != -100
    scores = F.log_softmax(lg, -1) if log else F.softmax(lg, -1)
    picked = scores.gather(-1, lb.clamp_min(0)[..., None])[..., 0]
    return (picked * is_target if mask else picked).sum(-1)


ROME = Exercise(
    name="rome_rank_one", section=SECTION, title="ROME's closed-form rank-one update", difficulty=3,
    minutes=20,
    equation=r"\Delta W = u\,\Lambda^\top,\quad u = \frac{C^{-1}k_*}{\|C^{-1}k_*\|},\quad "
             r"\Lambda = \frac{v_* - (k W + b)}{k \cdot u}",
    stub='''def rome_rank_one(W, bias, C, k_star, k, v_star):
    """ROME's update of one MLP output matrix (Meng et al. 2022, eq. 2), GPT-2's [in, out] layout.

    W [d_in, d_out], bias [d_out]: the layer computes k @ W + bias. C [d_in, d_in]: the
    covariance of keys at this layer; k_star [d_in]: the subject's key (averaged over prefixes);
    k [d_in]: the bare prompt's key; v_star [d_out]: the value that makes the model say the new
    object. Returns ΔW [d_in, d_out] of rank one such that k @ (W + ΔW) + bias equals v_star.
    (Eq. 2 writes k* everywhere; ROME's code, and lfmlab, take the residual and the denominator
    at the bare prompt's key k, the direction from k*.)
    """
''',
    body='''    u = torch.linalg.solve(C, k_star)                       # C⁻¹ k*
    u = u / u.norm()
    residual = v_star - (k @ W + bias)                        # what the layer must add at k
    return torch.outer(u, residual / (k @ u))
''',
    hints=("The direction is u = C⁻¹k* (torch.linalg.solve(C, k_star)), normalised: keys that C says "
           "are unlike k* barely move.",
           "The layer must add v* − (k W + b) at key k; ΔW = outer(u, Λ) adds (k·u) Λ there, so "
           "Λ = residual / (k·u)."),
    reference=rome_reference, cases=_rome_cases,
    mistakes={
        "C⁻¹ is missing: the update's direction is u = C⁻¹k*, which keeps other keys' outputs":
            lambda **kw: _rome_wrong(**kw, inverse=False),
        "v* itself was written; the update adds the residual v* − (k W + b), what the layer lacks":
            lambda **kw: _rome_wrong(**kw, residual=False),
        "the denominator (k · u) is missing: without it the edited layer does not map k to v*":
            lambda **kw: _rome_wrong(**kw, denominator=False),
        "k* used for the residual and the denominator, as eq. 2 writes it; ROME's code (and this "
        "exercise) take both at the bare prompt's key k, and only the direction from k*":
            lambda **kw: _rome_wrong(**{**kw, "k": kw["k_star"]}),
    },
    atol=1e-4,
)

LOGPROB = Exercise(
    name="target_logprob", section=SECTION, title="A target's log-probability: the causal shift",
    difficulty=2, minutes=12,
    equation=r"\log p(y \mid x) = \sum_{t \in \text{target}} \log \mathrm{softmax}(z_{t-1})_{y_t}",
    stub='''def target_logprob(logits, labels):
    """The log-probability of each sequence's target tokens under a causal LM.

    logits [B, T, V]: the model's outputs; labels [B, T]: the tokens, with -100 where a position is
    not part of the target (the prompt). A causal LM's output at position t predicts token t + 1.
    Returns [B]: Σ over target positions of log p(token).
    """
''',
    body='''    logp = F.log_softmax(logits[:, :-1], dim=-1)               # position t predicts t + 1
    targets = labels[:, 1:]
    is_target = targets != -100
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * is_target).sum(-1)
''',
    hints=("Shift: compare logits[:, :-1] with labels[:, 1:].",
           "Gather log_softmax at the label ids (clamp -100 to 0 first to index safely), then zero "
           "the non-target positions before summing."),
    reference=logprob_reference, cases=_logprob_cases,
    mistakes={
        "off by one: the output at position t predicts token t + 1; compare logits[:, :-1] with "
        "labels[:, 1:]":
            lambda **kw: _logprob_wrong(**kw, shift=False),
        "positions labelled -100 (the prompt) were counted: only target tokens count":
            lambda **kw: _logprob_wrong(**kw, mask=False),
        "probabilities were summed; use log_softmax (log-probabilities add up along a sequence)":
            lambda **kw: _logprob_wrong(**kw, log=False),
    },
)

def memit_reference(K, R, C, lam):
    from lfmlab.editing import memit

    return memit.solve(0, K, R, C, memit.MemitConfig(mom2_weight=lam)).float()


def _memit_cases():
    for seed, (n, d_in, d_out, lam) in enumerate([(10, 6, 4, 5.0), (4, 8, 3, 100.0), (12, 5, 5, 1.0)]):
        g = torch.Generator().manual_seed(seed)
        keys = torch.randn(80, d_in, generator=g)
        yield dict(K=torch.randn(n, d_in, generator=g), R=torch.randn(n, d_out, generator=g),
                   C=keys.T @ keys / 80, lam=lam)


MEMIT = Exercise(
    name="memit_solve", section=SECTION, title="MEMIT's least-squares update for many edits",
    difficulty=2, minutes=12,
    equation=r"\Delta = (\lambda C + K^\top K)^{-1} K^\top R",
    stub='''def memit_solve(K, R, C, lam):
    """MEMIT's per-layer update (Meng et al. 2023, eq. 14) for n edits at once, [in, out] layout.

    K [n, d_in]: the edits' keys; R [n, d_out]: the residuals each key's output must gain;
    C [d_in, d_in]: the covariance of the keys the layer already serves, weighted by λ = lam.
    Returns Δ [d_in, d_out] minimising ‖K Δ − R‖² + λ ‖Δ‖²_C: it writes the new outputs for the
    edit keys while keeping the outputs of previously stored keys.
    """
''',
    body='''    A = lam * C + K.T @ K                                     # [d_in, d_in]
    return torch.linalg.solve(A, K.T @ R)
''',
    hints=("Set the gradient of ‖K Δ − R‖² + λ tr(Δᵀ C Δ) to zero: (λC + KᵀK) Δ = Kᵀ R.",
           "torch.linalg.solve(lam * C + K.T @ K, K.T @ R); never form the inverse."),
    reference=memit_reference, cases=_memit_cases, atol=1e-4,
    mistakes={
        "the keys' own term is missing: solve (λC + KᵀK) Δ = KᵀR, not (λC) Δ = KᵀR":
            lambda K, R, C, lam: torch.linalg.solve(lam * C, K.T @ R),
        "λ weighs the wrong term: it scales the covariance of the stored keys, (λC + KᵀK)":
            lambda K, R, C, lam: torch.linalg.solve(C + lam * K.T @ K, K.T @ R),
        "the covariance is missing: plain least squares (pinv(K) R) forgets what the layer already "
        "stores; add λC":
            lambda K, R, C, lam: torch.linalg.pinv(K) @ R,
    },
)

EXERCISES = [ROME, LOGPROB, MEMIT]
