"""Model cards and weight files: what a zoo model is, how good it is, how to rebuild it.

Weights are safetensors only. Every committed file is listed in its card with a sha256 that
is checked before the file is loaded, so a truncated or hand-edited file fails loudly.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass
class ModelCard:
    """What a zoo model is. ``quality`` holds measured figures (name -> value)."""

    name: str
    summary: str
    architecture: str
    parameters: int
    trained_on: str
    quality: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    regenerate: str = ""
    source: str = "committed"  # committed | package | hub | untrained
    recipe: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / "card.json"
        path.write_text(json.dumps(asdict(self), indent=1, sort_keys=False) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> "ModelCard":
        return cls(**json.loads((Path(folder) / "card.json").read_text()))

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.summary}",
                 f"  architecture : {self.architecture}",
                 f"  parameters   : {self.parameters:,}",
                 f"  trained on   : {self.trained_on}",
                 f"  source       : {self.source}"]
        for key, value in self.quality.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            lines.append(f"  quality      : {key} = {shown}")
        for fname, digest in self.sha256.items():
            lines.append(f"  sha256       : {fname} {digest[:16]}…")
        if self.regenerate:
            lines.append(f"  regenerate   : {self.regenerate}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [("architecture", self.architecture), ("parameters", f"{self.parameters:,}"),
                ("trained on", self.trained_on), ("source", self.source)]
        rows += [(f"quality: {k}", f"{v:.4g}" if isinstance(v, float) else str(v))
                 for k, v in self.quality.items()]
        if self.regenerate:
            rows.append(("regenerate", f"`{self.regenerate}`"))
        body = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"**{self.name}**: {self.summary}\n\n| | |\n|---|---|\n{body}\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path, card: ModelCard) -> None:
    """Check every file the card lists against its sha256; raise a clear error on mismatch."""
    for fname, expected in card.sha256.items():
        path = Path(folder) / fname
        if not path.exists():
            raise FileNotFoundError(f"{card.name}: weight file {path} is missing. Restore it with "
                                    f"`git checkout -- {path.name}` or rebuild with `{card.regenerate}`.")
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(f"{card.name}: {path.name} does not match its card (sha256 {actual[:12]}… "
                             f"!= {expected[:12]}…). The file was changed or truncated: restore it from git, "
                             f"or rebuild it with `{card.regenerate}` (which rewrites the card).")


def record(folder: Path, card: ModelCard, files: list[str]) -> ModelCard:
    """Fill the card's sha256 for ``files`` in ``folder`` and write card.json."""
    card.sha256 = {f: sha256_file(Path(folder) / f) for f in sorted(files)}
    card.save(folder)
    return card


@contextmanager
def quiet_loading():
    """Silence transformers' per-load "Loading weights" bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
