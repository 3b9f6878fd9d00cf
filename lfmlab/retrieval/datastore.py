"""The kNN-LM datastore (Khandelwal et al., "Generalization through Memorization: Nearest
Neighbor Language Models", ICLR 2020, §2; survey §2.3.1).

For every position t of every document in a corpus, the frozen LM's *context vector*
f(c_t) (by default the output of its final layer norm: the vector the output embedding reads)
is a **key**, and the token w_{t+1} that followed is its **value**:

    (K, V) = {(f(c_t), w_{t+1}) | (c_t, w_{t+1}) ∈ D}                      (eq. 1 of the paper)

A query is the context vector of a new prefix; its k nearest keys by squared L2 distance are
its neighbours. Two search back-ends (the survey's §2.4 trade-off between memory size and
retrieval efficiency):

* ``"exact"``: brute force in torch on the store's device, chunked over queries *and* keys
  so that memory stays bounded (``query_chunk × key_chunk`` distances at a time);
* ``"faiss-flat"`` / ``"faiss-ivf"``: faiss (the optional ``faiss`` extra). Flat is exact;
  IVF clusters the keys (k-means, ``nlist`` cells) and searches only the ``nprobe`` nearest
  cells: much faster on large stores, at some cost in recall.

Knowledge is added by appending entries and removed by deleting them; the LM never changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from lfmlab.core.hooks import capture
from lfmlab.core.lm import right_pad
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer

BACKENDS = ("exact", "faiss-flat", "faiss-ivf")
FAISS_HINT = ("the faiss back-end needs faiss-cpu, which lfmlab's 'faiss' extra installs: "
              "pip install -e '.[faiss]' (or pip install faiss-cpu). backend='exact' needs nothing extra.")


@dataclass
class Neighbours:
    """The k nearest keys of Q queries, nearest first. ``distance`` [Q, k] is the squared L2
    distance (``inf`` where an approximate index found fewer than k), ``index`` [Q, k] the rows."""

    distance: torch.Tensor
    index: torch.Tensor

    def __getitem__(self, rows) -> "Neighbours":
        return Neighbours(self.distance[rows], self.index[rows])

    def first(self, k: int) -> "Neighbours":
        """The k nearest of these (they are sorted)."""
        return Neighbours(self.distance[:, :k], self.index[:, :k])


def key_layer(model: nn.Module) -> str:
    """The module whose output is the kNN-LM key: the final layer norm, i.e. the vector the output
    embedding reads. (The paper's best key is the input of the last block's feed-forward layer, after
    its layer norm, §5; on world-lm the two give the same perplexity within 0.5%. Pass ``layer=`` to
    :func:`build` to choose another module.)"""
    from lfmlab import zoo

    return zoo.layers(model).final_norm_name


pad = right_pad  # right-pad token id lists: (input_ids [B, T], attention_mask [B, T])


@torch.no_grad()
def forward_with_keys(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass of the frozen LM: (logits [B, T, V], context vectors f(c_t) [B, T, D])."""
    with capture(model, [layer]) as seen:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return logits, seen[layer]


GROUP = 32  # keys per group in exact_search's first pass


def augmented_keys(keys: torch.Tensor, key_norms: torch.Tensor | None = None, group: int = GROUP) -> torch.Tensor:
    """[k, ||k||²] for every key [N', D + 1], padded to a multiple of ``group`` rows with keys at
    infinite distance: then [−2q, 1]·[k, ||k||²] = ||k||² − 2 q·k is one matrix product."""
    kn = (keys * keys).sum(-1) if key_norms is None else key_norms
    aug = torch.cat([keys, kn[:, None].to(keys.dtype)], 1)
    pad = (-len(keys)) % group
    if pad:
        filler = torch.zeros(pad, aug.shape[1], dtype=aug.dtype, device=aug.device)
        filler[:, -1] = float("inf")
        aug = torch.cat([aug, filler])
    return aug


def exact_search(queries: torch.Tensor, keys: torch.Tensor, k: int, query_chunk: int | None = None,
                 key_chunk: int | None = None, key_norms: torch.Tensor | None = None,
                 augmented: torch.Tensor | None = None) -> Neighbours:
    """Brute-force k nearest keys by squared L2, on the tensors' device, with bounded memory.

    queries [Q, D], keys [N, D] -> Neighbours [Q, min(k, N)], nearest first. Two passes per
    chunk of queries, with no selection over every distance:

    1. ||k||² − 2 q·k for every key, one matrix product per key chunk (:func:`augmented_keys`,
       cached by the datastore as ``augmented``), reduced at once to the minimum of each group
       of 32 keys; the chunk keeps the distances of its k groups with the smallest minima;
    2. of the kept groups, the k with the smallest minima overall, and the top-k of their k·32
       distances; ||q||² (constant per query, so irrelevant to the ranking) is added at the end.

    Exact: at least k keys are no farther than the k-th smallest group minimum, so each of the
    k nearest keys lies in a group whose minimum is no larger, i.e. in one of those k groups.
    Live memory: query_chunk × (key_chunk + 32·k·N/key_chunk) floats. Default chunks: small
    on the CPU (cache-friendly), large on a GPU.
    """
    k = min(int(k), len(keys))
    dev = keys.device
    queries = queries.to(dev, keys.dtype)
    if k <= 0 or len(queries) == 0:
        return Neighbours(torch.empty(len(queries), 0, device=dev),
                          torch.empty(len(queries), 0, dtype=torch.long, device=dev))
    big = dev.type != "cpu"
    query_chunk = query_chunk or (4096 if big else 256)
    key_chunk = -(-(key_chunk or (65536 if big else 8192)) // GROUP) * GROUP         # whole groups
    aug = augmented_keys(keys, key_norms) if augmented is None else augmented    # [N', D + 1]
    dists, rows = [], []
    for qs in range(0, len(queries), query_chunk):
        q = queries[qs:qs + query_chunk]                                              # [q, D]
        qa = torch.cat([-2.0 * q, torch.ones(len(q), 1, dtype=q.dtype, device=dev)], 1)  # [q, D + 1]
        ar = torch.arange(GROUP, device=dev)
        mins, vals, cols = [], [], []
        for ks in range(0, len(aug), key_chunk):                                     # pass 1, per key chunk
            d = (qa @ aug[ks:ks + key_chunk].T).view(len(q), -1, GROUP)              # [q, c/32, 32]
            m = d.amin(-1)                                                            # group minima
            g = m.topk(min(k, m.shape[1]), dim=1, largest=False).indices             # this chunk's best groups
            mins.append(m.gather(1, g))
            vals.append(d.gather(1, g[..., None].expand(-1, -1, GROUP)))              # their distances [q, k, 32]
            cols.append((g + ks // GROUP)[..., None] * GROUP + ar)
        mins, vals, cols = torch.cat(mins, 1), torch.cat(vals, 1), torch.cat(cols, 1)
        if mins.shape[1] > k:                                                         # the k best groups overall
            g = mins.topk(k, dim=1, largest=False).indices[..., None].expand(-1, -1, GROUP)
            vals, cols = vals.gather(1, g), cols.gather(1, g)
        d, cand = vals.flatten(1), cols.flatten(1)                                    # pass 2: [q, k·32]
        d, pick = d.topk(k, dim=1, largest=False)                                     # sorted
        dists.append((d + (q * q).sum(-1, keepdim=True)).clamp_min_(0.0))            # + ||q||²
        rows.append(cand.gather(1, pick))
    return Neighbours(torch.cat(dists), torch.cat(rows))


def recall(found: Neighbours, truth: Neighbours, rtol: float = 1e-4) -> float:
    """Recall@k of a search against exact ``truth`` [Q, k], by distance: a found entry counts when it
    is no farther than the true k-th neighbour (so tied keys, e.g. repeated contexts, count as found)."""
    kth = truth.distance[:, -1:].to(found.distance.device)                          # [Q, 1]
    k = truth.distance.shape[1]
    hit = found.distance[:, :k] <= kth * (1 + rtol) + 1e-4                           # [Q, k]
    return float(hit.float().mean())


def require_faiss():
    """Import faiss lazily; raise ImportError naming the extra when it is missing."""
    try:
        import faiss
    except ImportError:
        raise ImportError(FAISS_HINT) from None
    return faiss


class FaissIndex:
    """A faiss index over the store's keys: ``kind="flat"`` (exact L2) or ``"ivf"`` (inverted file:
    k-means into ``nlist`` cells, search the ``nprobe`` nearest). faiss runs on the CPU: keys and
    queries are copied there and results come back to the queries' device."""

    def __init__(self, kind: str = "flat", nlist: int | None = None, nprobe: int = 8, seed: int = 0):
        if kind not in ("flat", "ivf"):
            raise ValueError(f"faiss index kind must be 'flat' or 'ivf', not {kind!r}")
        self.kind, self.nlist, self.nprobe, self.seed = kind, nlist, int(nprobe), seed
        self.index = None

    def build(self, keys: torch.Tensor) -> "FaissIndex":
        faiss = require_faiss()
        x = keys.detach().float().cpu().contiguous().numpy()                          # [N, D]
        d = x.shape[1]
        if self.kind == "flat" or len(x) < 2:
            index = faiss.IndexFlatL2(d)
        else:
            # ~4·sqrt(N) cells, with >= 39 training points per cell (faiss' own rule of thumb)
            nlist = self.nlist or max(1, min(int(4 * math.sqrt(len(x))), len(x) // 39))
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
            index.cp.seed = self.seed
            index.train(x)
            index.nprobe = min(self.nprobe, nlist)
        index.add(x)
        self.index = index
        return self

    def search(self, queries: torch.Tensor, k: int) -> Neighbours:
        if self.index is None:
            raise RuntimeError("build() the faiss index before searching it")
        d, i = self.index.search(queries.detach().float().cpu().contiguous().numpy(), int(k))
        dist, idx = torch.from_numpy(d), torch.from_numpy(i).long()
        missing = idx < 0                                                             # IVF: fewer than k found
        dist[missing], idx[missing] = float("inf"), 0
        return Neighbours(dist.to(queries.device), idx.to(queries.device))


class Datastore:
    """Keys [N, D], values [N], and where each entry came from (document id and position).

    ``documents[j]`` is the text of document j and ``tokens[j]`` its token ids; entries of
    removed documents are deleted, their ids are never reused. The store lives on the device
    of its keys; the exact back-end searches there.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor,
                 documents: list[str], tokens: list[list[int]], layer: str, backend: str = "exact",
                 **index_options):
        self.keys, self.values, self.doc, self.pos = keys, values, doc, pos
        self.documents, self.tokens, self.layer = documents, tokens, layer
        self.removed: set[int] = set()
        self._index: FaissIndex | None = None
        self._augmented: torch.Tensor | None = None   # [k, ||k||²], for exact search
        self.use(backend, **index_options)

    # ---- bookkeeping ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (
            f"Datastore({len(self):,} entries from {len(self.live_documents()):,} documents, "
            f"keys {tuple(self.keys.shape)} on {self.device}, backend {self.backend!r}, {self.nbytes / 2**20:.1f} MiB)"
        )

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.doc, self.pos))

    def live_documents(self) -> list[int]:
        return [j for j in range(len(self.documents)) if j not in self.removed]

    def find(self, text: str) -> list[int]:
        """Ids of the live documents whose text is exactly ``text`` (surrounding spaces ignored)."""
        text = text.strip()
        return [j for j in self.live_documents() if self.documents[j].strip() == text]

    def copy(self) -> "Datastore":
        new = Datastore(self.keys.clone(), self.values.clone(), self.doc.clone(), self.pos.clone(),
                        list(self.documents), [list(t) for t in self.tokens], self.layer, self.backend,
                        **self.index_options)
        new.removed = set(self.removed)
        return new

    def _changed(self) -> None:
        self._index, self._augmented = None, None   # rebuilt lazily on the next search

    # ---- search -------------------------------------------------------------------------------
    def use(self, backend: str, **index_options) -> "Datastore":
        """Choose the search back-end: ``"exact"`` (torch), ``"faiss-flat"`` or ``"faiss-ivf"``
        (``nlist``, ``nprobe``). Raises ImportError naming the extra when faiss is missing."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown back-end {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend != "exact":
            require_faiss()
        self.backend, self.index_options = backend, dict(index_options)
        self._changed()
        return self

    def search(self, queries: torch.Tensor, k: int) -> Neighbours:
        """The k nearest entries of each query [Q, D] -> Neighbours [Q, min(k, N)] on the queries' device."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}] context vectors, got {tuple(queries.shape)}")
        k = min(int(k), len(self))
        if self.backend == "exact":
            if self._augmented is None:
                self._augmented = augmented_keys(self.keys)
            found = exact_search(queries, self.keys, k, augmented=self._augmented,
                                 **{o: v for o, v in self.index_options.items() if o.endswith("_chunk")})
            return Neighbours(found.distance.to(queries.device), found.index.to(queries.device))
        if self._index is None:
            kind = self.backend.split("-", 1)[1]
            self._index = FaissIndex(kind, **{o: v for o, v in self.index_options.items()
                                             if o in ("nlist", "nprobe", "seed")}).build(self.keys)
        return self._index.search(queries, k)

    # ---- knowledge in, knowledge out -----------------------------------------------------------
    def add(self, model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64) -> list[int]:
        """Encode ``texts`` with the frozen ``model`` and append their (key, value) pairs.

        Returns the new documents' ids (pass them to :meth:`remove` to take the knowledge out).
        Every text must be non-empty plain text (no control characters); ids are never reused."""
        from lfmlab import validate

        texts = [validate.text(f"text {i}", t, fix="Store plain sentences.") for i, t in enumerate(texts)]
        entries, ids = encode_documents(model, tokenizer, texts, self.layer, batch_size,
                                        first_id=len(self.documents), device=self.device)
        keys, values, doc, pos, toks = entries
        self.keys = torch.cat([self.keys, keys.to(self.keys.dtype)])
        self.values, self.doc, self.pos = (torch.cat([self.values, values]), torch.cat([self.doc, doc]),
                                           torch.cat([self.pos, pos]))
        self.documents += [t.strip() for t in texts]
        self.tokens += toks
        self._changed()
        return ids

    def remove(self, doc_ids: Sequence[int]) -> int:
        """Delete every entry of these documents. Returns how many entries were removed.

        Raises ``ValueError`` (and removes nothing) for an id that was never added or is already
        removed: ids come from :meth:`add` and :func:`build`."""
        wanted = sorted(set(int(j) for j in doc_ids))
        unknown = [j for j in wanted if not 0 <= j < len(self.documents)]
        gone = [j for j in wanted if j in self.removed]
        if unknown or gone:
            what = (f"ids {unknown} were never added (this store has ids 0–{len(self.documents) - 1})" if unknown
                    else f"ids {gone} are already removed")
            raise ValueError(f"Cannot remove: {what}. Nothing was removed; pass ids returned by add().")
        ids = torch.tensor(wanted, dtype=torch.long, device=self.device)
        keep = ~torch.isin(self.doc, ids)                                             # [N]
        n_removed = int((~keep).sum())
        self.keys, self.values, self.doc, self.pos = (self.keys[keep], self.values[keep],
                                                      self.doc[keep], self.pos[keep])
        self.removed |= set(ids.tolist())
        self._changed()
        return n_removed

    def snippet(self, tokenizer: Tokenizer, row: int, width: int = 8) -> tuple[str, str]:
        """(the last ``width`` tokens of entry ``row``'s context, its value token), as text."""
        doc, pos = int(self.doc[row]), int(self.pos[row])
        toks = self.tokens[doc]
        context = toks[max(1, pos - width + 1):pos + 1]                               # skip the BOS
        prefix = "…" if pos - width + 1 > 1 else ""
        return prefix + tokenizer.decode(context), tokenizer.decode([toks[pos + 1]])


@torch.no_grad()
def encode_documents(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], layer: str, batch_size: int = 64,
                     first_id: int = 0, device: torch.device | None = None):
    """Run the frozen LM over each document; one entry per position t < len − 1.

    Returns ((keys [M, D], values [M], doc [M], pos [M], token lists), document ids).
    """
    texts = [t.strip() for t in texts]
    if not texts or any(not t for t in texts):
        raise ValueError("every document must be non-empty text, e.g. 'The capital of Peru is Lima.'")
    tokens = [list(ids) for ids in tokenizer(texts)["input_ids"]]
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 2048)
    too_long = [t for t, ids in zip(texts, tokens) if len(ids) > limit]
    if too_long:
        raise ValueError(f"{len(too_long)} document(s) exceed the model's {limit} positions, e.g. "
                         f"{too_long[0][:60]!r}…: split them into sentences.")
    if any(len(ids) < 2 for ids in tokens):
        raise ValueError("a document must have at least one token after the BOS")
    mdev = device_of(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    keys, values, docs, pos = [], [], [], []
    for s in range(0, len(tokens), batch_size):
        chunk = tokens[s:s + batch_size]
        ids, mask = pad(chunk, pad_id, mdev)
        _, h = forward_with_keys(model, ids, mask, layer)                             # [B, T, D]
        valid = mask[:, 1:].bool()                                                    # position t has a next token
        keys.append(h[:, :-1][valid].float())                                         # [m, D]
        values.append(ids[:, 1:][valid])                                              # [m]
        t_idx = torch.arange(ids.shape[1] - 1, device=mdev).expand_as(valid)
        d_idx = torch.arange(s, s + len(chunk), device=mdev)[:, None].expand_as(valid) + first_id
        docs.append(d_idx[valid])
        pos.append(t_idx[valid])
    dev = device if device is not None else mdev
    out = tuple(torch.cat(x).to(dev) for x in (keys, values, docs, pos))
    return (*out, tokens), list(range(first_id, first_id + len(texts)))


def build(model: nn.Module, tokenizer: Tokenizer, texts: Sequence[str], layer: str | None = None, batch_size: int = 64,
          backend: str = "exact", device: torch.device | str | None = None, **index_options) -> Datastore:
    """Build a datastore from a corpus of documents (sentences or short passages).

    ``layer`` is the module whose output is the key (default :func:`key_layer`: the final layer
    norm). ``device``: where the keys live and the exact search runs (default: the model's).
    The model is only read.
    """
    from lfmlab import runtime

    layer = layer or key_layer(model)
    dev = runtime.device(device) if device is not None else device_of(model)
    (keys, values, doc, pos, tokens), _ = encode_documents(model, tokenizer, texts, layer, batch_size, 0, dev)
    return Datastore(keys, values, doc, pos, [t.strip() for t in texts], tokens, layer, backend, **index_options)
