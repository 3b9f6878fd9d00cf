"""What notebook 03 (database augmentation, survey §2.3–2.4) claims, as :class:`lfmlab.claims.Claim`.

The notebook fills a flat ``measured`` dict with the keys below; ``tests/test_claims_fail_on_null.py``
replaces the results of each claim's ``about`` method by its null method and shows that the
claim then fails:

* kNN-LM facts: nothing added to the datastore (the store without the facts);
* removal: a remove that does not remove;
* kNN-LM on held-out text: an *empty* datastore (p_kNN = 0, so the tuned λ is 0);
* retrievers and In-Context RALM: a retriever that ignores the question (random passages);
* REPLUG LSR: its training with learning rate 0 (the query map stays the identity);
* search back-ends: random neighbours;
* the frozen LM: one gradient step; the panel: a panel without its input check.

Margins come from smoke runs over SEED 0–4 (``benchmarks/claims_spread.py``).
"""
from __future__ import annotations

from lfmlab.claims import Claim

FACTS = ("kNN-LM facts",)
TEXT = ("kNN-LM text",)

CLAIMS: list[Claim] = [
    Claim("kNN-LM: held-out facts in the store are answered (top-1)",
          "facts/added_top1", ">=", 0.95, about=FACTS),
    Claim("kNN-LM: top-1 on those facts rises by ≥ 0.4 over the LM alone",
          lambda m: m["facts/added_top1"] - m["facts/lm_top1"], ">=", 0.4, about=FACTS),
    Claim("kNN-LM: object perplexity falls ≥ 5× (LM alone / with the facts)",
          lambda m: m["facts/lm_object_ppl"] / m["facts/added_object_ppl"], ">=", 5.0, about=FACTS),
    Claim("kNN-LM: held-out phrasings answered with the facts in the store",
          "facts/added_paraphrase_top1", ">=", 0.85, about=FACTS),
    Claim("removing the facts restores the store and the scores exactly (1 = yes)",
          lambda m: min(m["facts/restored"], m["facts/removed_equals_before"]), ">=", 1.0,
          about=("remove",)),
    Claim("held-out text: (λ, k, T) chosen on validation lower test perplexity by ≥ 1%",
          "text/gain", ">=", 0.01, about=TEXT, fmt=".3f"),
    Claim("held-out text: a U over λ (min of the gain and ppl(λ=0.9)/ppl(LM) − 1)",
          lambda m: min(m["text/gain"], m["text/ppl_lambda_0.9"] / m["text/lm_ppl"] - 1), ">", 0.0,
          about=TEXT, fmt=".3f"),
    # In-Context RALM, (s, ℓ) chosen on the validation half, judged on the test half. SEED 0-4:
    # 0.24-0.58 (random passages: 4-8× the LM alone's)
    Claim("In-Context RALM: the held-out facts' objects' perplexity ≤ 0.75× the LM alone's (test texts)",
          lambda m: m["ralm/obj_ppl"] / m["ralm/obj_ppl_none"], "<=", 0.75, about=("In-Context RALM",),
          fmt=".3f"),
    # REPLUG LSR, trained on half the held-out facts' prompts, judged on the other half (top-1
    # passage of 1,501). SEED 0-4: +0.67 to +2.05 nats (exact match +0.04 to +0.11); null, lr 0: 0
    Claim("REPLUG LSR: the other held-out facts' answer log-prob rises ≥ 0.3 nats (top-1 passage)",
          "lsr/logprob_gain", ">=", 0.3, about=("REPLUG LSR",)),
    Claim("RAG, dense retriever, prepend k = 1: ≥ 0.4 above no retrieval",
          lambda m: m["rag/dense_prepend_1"] - m["rag/none"], ">=", 0.4, about=("dense retriever",)),
    Claim("RAG, dense retriever, REPLUG k = 3: ≥ 0.4 above no retrieval",
          lambda m: m["rag/dense_ensemble_3"] - m["rag/none"], ">=", 0.4, about=("dense retriever",)),
    Claim("dense retriever: recall@5 ≥ 0.85 and ≥ BM25's (min of the two margins)",
          lambda m: min(m["recall/dense_5"] - 0.85, m["recall/dense_5"] - m["recall/bm25_5"]), ">=", 0.0,
          about=("dense retriever",), fmt=".3f"),
    Claim("BM25: recall@5 ≥ 0.6 (a question shares the subject's words)",
          "recall/bm25_5", ">=", 0.6, about=("BM25",)),
    Claim("exact search returns the brute-force neighbours (recall@8)",
          "search/exact_recall", ">=", 0.999, about=("exact search",), fmt=".3f"),
    Claim("faiss flat returns the brute-force neighbours (recall@8)",
          "search/faiss_flat_recall", ">=", 0.999, about=("faiss flat",), when="search/faiss", fmt=".3f"),
    Claim("faiss IVF, nprobe 8: recall@8 ≥ 0.9",
          "search/ivf8_recall", ">=", 0.9, about=("faiss IVF",), when="search/faiss", fmt=".3f"),
    Claim("faiss IVF: 8 probes find more than 1 probe (recall gain ≥ 0.05)",
          lambda m: m["search/ivf8_recall"] - m["search/ivf1_recall"], ">=", 0.05, about=("faiss IVF",),
          when="search/faiss", fmt=".3f"),
    Claim("the LM is unchanged: nothing was trained (1 = yes)", "lm/unchanged", ">=", 1.0,
          about=("frozen LM",)),
    Claim("kNN panel: λ = 1.5 is refused and changes nothing (1 = yes)", "panel/refused", ">=", 1.0,
          about=("panel",)),
]
