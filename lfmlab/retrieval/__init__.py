"""Database augmentation (survey §2.3): give a *frozen* language model an external memory.

* :mod:`datastore` — the kNN-LM datastore: keys are the LM's context vectors, values the
  tokens that followed; exact search in torch (chunked) or faiss (flat, IVF).
* :mod:`knnlm` — kNN-LM (Khandelwal et al., ICLR 2020): interpolate the LM's next-token
  distribution with one built from the nearest stored contexts.
* :mod:`rag` — retrieval-augmented generation with a frozen LM: dense (minilm) and BM25
  retrievers, passages prepended to the input (REALM/RAG-style) or one forward pass per
  passage, ensembled (REPLUG).

The language model is never trained or modified: all new knowledge lives in the store.
"""
