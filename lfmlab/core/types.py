"""Types the whole package shares."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = ["Tokenizer"]


@runtime_checkable
class Tokenizer(Protocol):
    """What lfmlab asks of a tokenizer: a transformers ``PreTrainedTokenizer(Fast)`` (world-lm's
    byte-level BPE, GPT-2's, minilm's WordPiece) has all of it.

    ``tokenizer(texts)["input_ids"]`` encodes, ``decode(ids)`` decodes, ``len(tokenizer)`` is the
    vocabulary size; ``bos_token_id``/``eos_token_id``/``pad_token_id`` may be ``None``, and
    ``model_max_length`` is the context length (huge when unknown).
    """

    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    model_max_length: int

    def __call__(self, text: str | Sequence[str], **kwargs: Any) -> Any: ...

    def decode(self, ids: Sequence[int], **kwargs: Any) -> str: ...

    def __len__(self) -> int: ...
