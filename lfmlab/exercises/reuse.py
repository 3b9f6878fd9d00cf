"""Exercises of notebook 05 (model reuse): TIES merging and one layer of weight matching."""
from __future__ import annotations

import torch

from lfmlab.exercises.core import Exercise

SECTION = "05"


def ties_reference(taus, density):
    from lfmlab.reuse import ties

    trimmed = ties.trim(taus, density)
    return ties.disjoint_mean(trimmed, ties.elect_sign(trimmed))


def match_reference(w_a, w_b):
    from lfmlab.reuse.rebasin import _lap

    return _lap(w_a @ w_b.T)


def _ties_cases():
    for seed, (n, p, density) in enumerate([(3, 40, 0.2), (2, 25, 0.6), (5, 30, 0.5), (4, 20, 1.0)]):
        g = torch.Generator().manual_seed(seed)
        yield dict(taus=torch.randn(n, p, generator=g), density=density)


def _match_cases():
    for seed, (units, d_in) in enumerate([(6, 5), (10, 4), (4, 9)]):
        g = torch.Generator().manual_seed(seed)
        w_a = torch.randn(units, d_in, generator=g)
        w_b = w_a[torch.randperm(units, generator=g)] + 0.6 * torch.randn(units, d_in, generator=g)
        yield dict(w_a=w_a, w_b=w_b)


def _trim(taus, density):
    k = int(density * taus.shape[1])
    top = taus.abs().topk(k, dim=1).indices
    return taus * torch.zeros_like(taus, dtype=torch.bool).scatter_(1, top, True)


def _ties_wrong(taus, density, trim=True, elect="sum", divide="agree"):
    t = _trim(taus, density) if trim else taus
    score = t.sum(0) if elect == "sum" else torch.sign(t).sum(0)
    sign = torch.where(score >= 0, 1.0, -1.0)
    agree = (torch.sign(t) == sign).float()
    total = (t * agree).sum(0)
    return total / (agree.sum(0).clamp_min(1) if divide == "agree" else t.shape[0])


TIES = Exercise(
    name="ties_merge", section=SECTION, title="TIES: trim, elect sign, disjoint mean", difficulty=3,
    minutes=20,
    equation=r"\gamma_p = \mathrm{sgn}\Big(\sum_i \hat\tau_{i,p}\Big),\quad "
             r"\tau_{m,p} = \frac{1}{|A_p|}\sum_{i \in A_p} \hat\tau_{i,p},\ "
             r"A_p = \{i : \mathrm{sgn}(\hat\tau_{i,p}) = \gamma_p\}",
    stub='''def ties_merge(taus, density):
    """TIES-merging (Yadav et al. 2023) of n task vectors, taus [n, P] -> the merged vector [P].

    1. trim: keep the int(density * P) largest-magnitude entries of each task vector, zero the rest;
    2. elect: γ = the sign of the sum of the trimmed entries, per parameter (a zero sum counts +1);
    3. disjoint mean: average, per parameter, only the trimmed entries whose sign is γ (zeros do
       not count); a parameter with no such entry gets 0.
    """
''',
    body='''    k = int(density * taus.shape[1])
    top = taus.abs().topk(k, dim=1).indices
    trimmed = taus * torch.zeros_like(taus, dtype=torch.bool).scatter_(1, top, True)
    sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
    agree = (torch.sign(trimmed) == sign).to(taus.dtype)      # a zero never agrees
    return (trimmed * agree).sum(0) / agree.sum(0).clamp_min(1.0)
''',
    hints=("Trim with taus.abs().topk(k, dim=1).indices and a mask; elect with the sign of "
           "trimmed.sum(0).",
           "The disjoint mean divides by how many entries agree with γ (torch.sign(trimmed) == γ; a "
           "zero never agrees), not by n."),
    reference=ties_reference, cases=_ties_cases,
    mistakes={
        "zeros counted in the disjoint mean: divide by the number of task vectors whose trimmed entry "
        "agrees with the elected sign, not by n":
            lambda taus, density: _ties_wrong(taus, density, divide="n"),
        "the sign elected by a vote of signs; TIES elects the sign of the summed trimmed values, "
        "γ = sgn(Σ τ̂), so large entries weigh more":
            lambda taus, density: _ties_wrong(taus, density, elect="count"),
        "no trim: keep only the int(density * P) largest-magnitude entries of each task vector first":
            lambda taus, density: _ties_wrong(taus, density, trim=False),
    },
)


MATCH = Exercise(
    name="weight_matching_layer", section=SECTION, title="One layer of weight matching (Git Re-Basin)",
    difficulty=2, minutes=15,
    equation=r"\pi^* = \arg\max_{\pi} \sum_i \langle W^A_{i,:},\, W^B_{\pi(i),:} \rangle",
    stub='''def weight_matching_layer(w_a, w_b):
    """Git Re-Basin's weight matching (Ainsworth et al. 2023) for one layer.

    w_a, w_b [units, d_in]: the incoming weights of the same layer in models A and B. Returns the
    permutation perm [units] (long) of B's units that makes w_b[perm] most similar to w_a: the
    maximum of Σ_i <w_a[i], w_b[perm[i]]> over permutations (a linear assignment problem).
    (For a hidden layer, Git Re-Basin adds the next layer's outgoing weights to the score and
    iterates over layers; this is one layer's step.)
    """
''',
    body='''    from scipy.optimize import linear_sum_assignment

    score = (w_a @ w_b.T).double().numpy()                # score[i, j] = <w_a[i], w_b[j]>
    _, cols = linear_sum_assignment(score, maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)
''',
    hints=("score[i, j] = <w_a[i], w_b[j]> is w_a @ w_b.T; you need one j per i, each j used once.",
           "scipy.optimize.linear_sum_assignment(score, maximize=True) returns (rows, cols); cols is "
           "the permutation."),
    reference=match_reference, cases=_match_cases,
    mistakes={
        "a row-wise argmax is not a permutation (two units can pick the same partner): solve the "
        "linear assignment, e.g. scipy.optimize.linear_sum_assignment(score, maximize=True)":
            lambda w_a, w_b: (w_a @ w_b.T).argmax(1),
        "the inverse permutation: return perm with w_b[perm] ≈ w_a (perm[i] is B's unit for A's unit i)":
            lambda w_a, w_b: match_reference(w_a, w_b).argsort(),
        "the similarity was minimised: pass maximize=True (or negate the score)":
            lambda w_a, w_b: match_reference(-w_a, w_b),
    },
)

def slerp_reference(a, b, t):
    from lfmlab.reuse.slerp import slerp_tensor

    return slerp_tensor(a, b, t)[0]


def _slerp_cases():
    for seed, (shape, t) in enumerate([((6,), 0.5), ((3, 4), 0.25), ((10,), 0.8), ((2, 5), 0.6)]):
        g = torch.Generator().manual_seed(seed)
        yield dict(a=torch.randn(*shape, generator=g) * 2, b=torch.randn(*shape, generator=g), t=t)


def _slerp_wrong(a, b, t, swap=False, unit=False):
    ua, ub = a.flatten() / a.norm(), b.flatten() / b.norm()
    omega = torch.arccos((ua @ ub).clamp(-1, 1))
    wa, wb = torch.sin((1 - t) * omega) / torch.sin(omega), torch.sin(t * omega) / torch.sin(omega)
    if swap:
        wa, wb = wb, wa
    return (wa * ua.view_as(a) + wb * ub.view_as(b)) if unit else wa * a + wb * b


SLERP = Exercise(
    name="slerp", section=SECTION, title="Spherical interpolation of two weight tensors", difficulty=2,
    minutes=12,
    equation=r"\mathrm{slerp}(a, b; t) = \frac{\sin((1-t)\Omega)}{\sin\Omega}\, a + "
             r"\frac{\sin(t\Omega)}{\sin\Omega}\, b,\quad \cos\Omega = "
             r"\frac{\langle a, b\rangle}{\|a\|\,\|b\|}",
    stub='''def slerp(a, b, t):
    """SLERP (Shoemake 1985), as mergekit merges models: a and b are one tensor of each model (any
    shape, the same for both), 0 ≤ t ≤ 1. Ω is the angle between the flattened tensors. Returns a
    tensor shaped like a: slerp(a, b; 0) = a, slerp(a, b; 1) = b. (Assume a and b are not parallel.)
    """
''',
    body='''    cos = (a.flatten() @ b.flatten()) / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
''',
    hints=("Ω = arccos of the cosine between the flattened tensors (divide the dot product by both "
           "norms).",
           "The weight of a is sin((1 − t) Ω) / sin Ω, the weight of b sin(t Ω) / sin Ω; apply them to "
           "a and b themselves, not to unit vectors."),
    reference=slerp_reference, cases=_slerp_cases,
    mistakes={
        "the weights are swapped: at t = 0 slerp must give a, so a's weight is sin((1 − t) Ω) / sin Ω":
            lambda **kw: _slerp_wrong(**kw, swap=True),
        "the result lies on the unit sphere: apply the weights to a and b themselves, not to a/‖a‖ and "
        "b/‖b‖":
            lambda **kw: _slerp_wrong(**kw, unit=True),
        "that is linear interpolation (1 − t) a + t b; SLERP moves along the arc, with sin weights":
            lambda a, b, t: (1 - t) * a + t * b,
    },
)

EXERCISES = [TIES, MATCH, SLERP]
