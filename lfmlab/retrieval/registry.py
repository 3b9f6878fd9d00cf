"""The database-augmentation area's registry (notebook 03): each method with its paper and entry point."""
from __future__ import annotations

from lfmlab.core.registry import MethodInfo
from lfmlab.retrieval import datastore, knnlm, lsr, rag, ralm

__all__ = ["METHODS"]

_NB = "03_database_augmentation"

METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    MethodInfo("kNN-LM", "mix the LM's next token with one read off the nearest stored contexts",
               "Khandelwal et al. 2020", "§2.3.1", knnlm.collect_text, knnlm.KNNCache, _NB,
               extra={"then": "knnlm.tune / knnlm.fact_scores re-mix the cache for any λ, k, T"}),
    MethodInfo("kNN-LM knowledge update", "add documents to the store, answer from them, remove them again",
               "Khandelwal et al. 2020", "§2.3.1", knnlm.knowledge_update, knnlm.KnowledgeUpdate, _NB),
    MethodInfo("exact search", "the k nearest keys by squared L2, exactly, in chunks", "(brute force)", "§2.3.1",
               datastore.exact_search, datastore.Neighbours, _NB),
    MethodInfo("faiss IVF", "approximate search over k-means cells, nprobe cells searched", "Johnson et al. 2019",
               "§2.3.1", datastore.FaissIndex, datastore.FaissIndex, _NB),
    MethodInfo("RAG, prepend", "retrieved passages put before the prompt of a frozen LM (one retrieval)",
               "Ram et al. 2023",
               "§2.3.2", rag.answer, rag.RAGResult, _NB, extra={"mode": "prepend"}),
    MethodInfo("In-Context RALM", "retrieve with the last ℓ tokens every s tokens, passage before the prefix",
               "Ram et al. 2023", "§2.3.2", ralm.perplexity, ralm.RALMConfig, _NB),
    MethodInfo("REPLUG", "one forward pass per passage, answers ensembled by retrieval score", "Shi et al. 2024",
               "§2.3.2", rag.answer, rag.RAGResult, _NB, extra={"mode": "ensemble"}),
    MethodInfo("REPLUG LSR", "the retriever learns which passages help the frozen LM: KL to the LM's feedback",
               "Shi et al. 2024", "§2.3.2", lsr.replug_lsr, lsr.LSRResult, _NB, lsr.LSRConfig),
    MethodInfo("dense retriever", "passages and queries embedded by minilm, ranked by cosine",
               "Reimers and Gurevych 2019",
               "§2.3.2", rag.DenseRetriever, rag.Retrieved, _NB),
    MethodInfo("BM25", "lexical ranking by term frequency and rarity", "Robertson and Zaragoza 2009", "§2.3.2",
               rag.BM25Retriever, rag.Retrieved, _NB),
]}
