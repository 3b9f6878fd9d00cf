"""Exercises of notebook 03 (database augmentation): the kNN-LM's distance softmax and mixture."""
from __future__ import annotations

import torch

from lfmlab.exercises.core import Exercise

SECTION = "03"


def knn_distribution_reference(distance, token, vocab_size, temperature):
    from lfmlab.retrieval import knnlm
    from lfmlab.retrieval.datastore import Neighbours

    q, k = distance.shape
    return knnlm.knn_distribution(Neighbours(distance, torch.arange(q * k).view(q, k)), token.flatten(),
                                  vocab_size, temperature)


def knn_interpolate_reference(p_lm, p_knn, lam):
    from lfmlab.retrieval import knnlm

    return knnlm.interpolate(p_lm, p_knn, lam)


def _distribution_cases():
    for seed, (q, k, v, t) in enumerate([(3, 4, 10, 1.0), (2, 8, 6, 10.0), (4, 1, 5, 2.0), (1, 6, 3, 0.5)]):
        g = torch.Generator().manual_seed(seed)
        distance = (torch.rand(q, k, generator=g) * 5).sort(-1).values     # nearest first
        token = torch.randint(0, min(v, 3), (q, k), generator=g)           # few tokens: repeats
        yield dict(distance=distance, token=token, vocab_size=v, temperature=t)


def _interpolate_cases():
    for seed, (q, v, lam) in enumerate([(3, 7, 0.25), (4, 5, 0.8), (2, 4, 0.5)]):
        g = torch.Generator().manual_seed(seed)
        p_lm = torch.rand(q, v, generator=g).softmax(-1)
        p_knn = torch.rand(q, v, generator=g).softmax(-1)
        p_knn[-1] = 0.0                                                  # a query with no neighbour
        yield dict(p_lm=p_lm, p_knn=p_knn, lam=lam)


def _scatter(w, token, v):
    return torch.zeros(w.shape[0], v).scatter_add_(1, token, w)


KNN_DISTRIBUTION = Exercise(
    name="knn_distribution", section=SECTION, title="The kNN-LM's distance softmax", difficulty=2,
    minutes=15,
    equation=r"p_{kNN}(y \mid x) \propto \sum_{(k_i, v_i) \in \mathcal{N}} "
             r"\mathbb{1}_{y = v_i}\, \exp(-d(k_i, f(x)) / T)",
    stub='''def knn_distribution(distance, token, vocab_size, temperature):
    """p_kNN (Khandelwal et al. 2020, eq. 2) for Q queries from their k nearest stored contexts.

    distance [Q, k]: squared L2 distances, nearest first; token [Q, k] (long): the next token stored
    with each neighbour; vocab_size V; temperature T > 0. Returns [Q, V]: each row sums to 1, and
    neighbours that carry the same token add their weights.
    """
''',
    body='''    weights = torch.softmax(-distance / temperature, dim=-1)                 # [Q, k]
    out = torch.zeros(distance.shape[0], vocab_size)
    return out.scatter_add_(1, token, weights)
''',
    hints=("The weight of neighbour i is softmax(−d_i / T) over the k neighbours: nearer "
           "neighbours weigh more.",
           "torch.zeros(Q, V).scatter_add_(1, token, weights) adds the weights of neighbours "
           "with the same token."),
    reference=knn_distribution_reference, cases=_distribution_cases,
    mistakes={
        "the weights grow with distance: use softmax(−d / T), so that nearer neighbours weigh more":
            lambda distance, token, vocab_size, temperature:
                _scatter(torch.softmax(distance / temperature, -1), token, vocab_size),
        "the temperature is missing: the weights are softmax(−d / T)":
            lambda distance, token, vocab_size, temperature:
                _scatter(torch.softmax(-distance, -1), token, vocab_size),
        "neighbours with the same token overwrite each other (scatter_); their weights must add up "
        "(scatter_add_)":
            lambda distance, token, vocab_size, temperature: torch.zeros(distance.shape[0], vocab_size)
                .scatter_(1, token, torch.softmax(-distance / temperature, -1)),
    },
)

KNN_INTERPOLATE = Exercise(
    name="knn_interpolate", section=SECTION, title="Mix the neighbours into the LM", difficulty=1,
    minutes=8,
    equation=r"p(y \mid x) = \lambda\, p_{kNN}(y \mid x) + (1 - \lambda)\, p_{LM}(y \mid x)",
    stub='''def knn_interpolate(p_lm, p_knn, lam):
    """The kNN-LM (Khandelwal et al. 2020, eq. 3): p_lm, p_knn [Q, V], λ in [0, 1] -> [Q, V].

    A query with no neighbour has an all-zero p_knn row: it keeps p_lm unchanged (otherwise the
    row would lose the mass λ).
    """
''',
    body='''    has = (p_knn.sum(-1, keepdim=True) > 0).to(p_lm.dtype)                    # [Q, 1]
    return lam * has * p_knn + (1 - lam * has) * p_lm
''',
    hints=("λ weighs the neighbours: λ p_knn + (1 − λ) p_lm.",
           "For rows where p_knn.sum(-1) == 0 use λ = 0: build a [Q, 1] mask of rows that have "
           "neighbours and multiply λ by it."),
    reference=knn_interpolate_reference, cases=_interpolate_cases,
    mistakes={
        "λ weighs the wrong distribution: λ goes with p_kNN and 1 − λ with p_LM":
            lambda p_lm, p_knn, lam: lam * p_lm + (1 - lam) * p_knn,
        "a query with no neighbour (an all-zero p_kNN row) must keep p_LM; here it loses the mass λ":
            lambda p_lm, p_knn, lam: lam * p_knn + (1 - lam) * p_lm,
    },
)

EXERCISES = [KNN_DISTRIBUTION, KNN_INTERPOLATE]
