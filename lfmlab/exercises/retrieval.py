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

def bm25_reference(tf, k1, b):
    from lfmlab.retrieval.rag import bm25_weights

    return bm25_weights(tf, k1, b)


def _bm25_cases():
    for seed, (n, w, k1, b) in enumerate([(5, 8, 1.2, 0.75), (8, 6, 2.0, 0.5), (4, 10, 0.9, 1.0)]):
        g = torch.Generator().manual_seed(seed)
        tf = torch.randint(0, 4, (n, w), generator=g).float() * (torch.rand(n, w, generator=g) < 0.6)
        tf[:, 0] = 1.0 + tf[:, 0]                                      # a word in every document
        yield dict(tf=tf, k1=k1, b=b)


def _bm25_wrong(tf, k1, b, idf="log1p", norm=True, saturate=True):
    n, n_w = tf.shape[0], (tf > 0).sum(0).float()
    ratio = (n - n_w + 0.5) / (n_w + 0.5)
    weight = torch.log1p(ratio) if idf == "log1p" else torch.log(ratio)
    length = tf.sum(1, keepdim=True)
    scale = k1 * (1 - b + b * length / length.mean()) if norm else k1
    return weight * tf * ((k1 + 1) if saturate else 1.0) / (tf + scale)


BM25 = Exercise(
    name="bm25_weights", section=SECTION, title="BM25's document-term weights", difficulty=2, minutes=15,
    equation=r"w(d, t) = \mathrm{idf}(t)\,\frac{f_{t,d}\,(k_1 + 1)}{f_{t,d} + k_1\big(1 - b + b\,"
             r"\frac{|d|}{\mathrm{avgdl}}\big)},\quad \mathrm{idf}(t) = \ln\Big(1 + "
             r"\frac{N - n_t + 0.5}{n_t + 0.5}\Big)",
    stub='''def bm25_weights(tf, k1, b):
    """Okapi BM25 (Robertson & Zaragoza 2009), the lexical retriever of RAG's notebook section.

    tf [N, W]: how often each of W words occurs in each of N documents. Returns [N, W]: each
    document-word weight; a query's score for a document is the sum of its words' weights.
    |d| is a document's length in words (the row sum), avgdl the mean length, n_t the number of
    documents that contain word t. The idf is ln(1 + ...), Lucene's form (Robertson & Zaragoza
    write it without the 1 +, which turns negative for common words).
    """
''',
    body='''    n_docs = tf.shape[0]
    n_t = (tf > 0).sum(0).float()                                   # documents with each word
    idf = torch.log1p((n_docs - n_t + 0.5) / (n_t + 0.5))
    length = tf.sum(1, keepdim=True)                                # |d| [N, 1]
    norm = k1 * (1 - b + b * length / length.mean())
    return idf * tf * (k1 + 1) / (tf + norm)
''',
    hints=("idf: count the documents that contain each word, (tf > 0).sum(0); use ln(1 + ...), "
           "torch.log1p, so that a word in most documents keeps a small positive weight.",
           "The length normalisation k1 (1 − b + b |d| / avgdl) is [N, 1]: |d| = tf.sum(1, "
           "keepdim=True)."),
    reference=bm25_reference, cases=_bm25_cases,
    mistakes={
        "idf without the 1 +: ln((N − n + 0.5) / (n + 0.5)) is negative for words in more than half "
        "of the documents; BM25 here uses ln(1 + ...) (torch.log1p)":
            lambda **kw: _bm25_wrong(**kw, idf="log"),
        "the length normalisation is missing: long documents must not win by repeating words "
        "(k1 (1 − b + b |d| / avgdl))":
            lambda **kw: _bm25_wrong(**kw, norm=False),
        "the (k1 + 1) factor is missing from the numerator":
            lambda **kw: _bm25_wrong(**kw, saturate=False),
    },
)

EXERCISES = [KNN_DISTRIBUTION, KNN_INTERPOLATE, BM25]
