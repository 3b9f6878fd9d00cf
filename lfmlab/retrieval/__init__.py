"""Database augmentation (survey §2.3): give a *frozen* language model an external memory.

* :mod:`datastore` — the kNN-LM datastore: keys are the LM's context vectors, values the
  tokens that followed; exact search in torch (chunked) or faiss (flat, IVF).
* :mod:`knnlm` — kNN-LM (Khandelwal et al., ICLR 2020): interpolate the LM's next-token
  distribution with one built from the nearest stored contexts.
* :mod:`rag` — retrieval-augmented generation with a frozen LM: dense (minilm) and BM25
  retrievers, passages prepended to the input (REALM/RAG-style) or one forward pass per
  passage, ensembled (REPLUG).

The language model is never trained or modified: all new knowledge lives in the store.

* :mod:`registry` — :data:`METHODS`, every method with its paper and entry point.
"""

__all__ = ["METHODS"]


def __getattr__(name: str):
    """``lfmlab.retrieval.METHODS``: the area's registry, imported on first use (the submodules stay on demand)."""
    if name == "METHODS":
        from lfmlab.retrieval.registry import METHODS

        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
