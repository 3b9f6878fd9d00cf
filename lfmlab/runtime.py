"""Runtime helpers: the device, the seed, the run length, the cache, and a description of them.

A notebook calls :func:`setup` once in its setup cell; everything after honours the device
and seed chosen there (``runtime.device()`` with no argument returns the session's device).
"""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

_session: dict[str, object] = {"seed": None, "device": None, "smoke": None, "full": False}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def device(name: str | torch.device | None = None) -> torch.device:
    """The torch device to use: ``cuda`` if available, else ``cpu``.

    ``name`` (or ``$LFMLAB_DEVICE`` when ``name`` is None and :func:`setup` chose none)
    overrides the choice: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.
    Raises ``ValueError`` with a fix when the device is unknown or not present here.
    """
    if name is None and _session["device"] is not None:
        return _session["device"]  # type: ignore[return-value]
    choice = str(name if name is not None else os.environ.get("LFMLAB_DEVICE") or "auto").strip()
    if choice.lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(choice)
    except RuntimeError:
        raise ValueError(f"Unknown device {choice!r}. Use 'auto', 'cpu' or 'cuda' "
                         f"(or 'cuda:N' for the N-th GPU).") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise ValueError(f"Device {choice!r} was asked for, but no CUDA GPU is usable here "
                             f"(torch {torch.__version__}, {build}). Use DEVICE='auto' or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"Device {choice!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("Device 'mps' was asked for, but Apple's MPS backend is not available here. "
                         "Use DEVICE='auto' or 'cpu'.")
    elif dev.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"Device {choice!r} is not supported by lfmlab. Use 'auto', 'cpu' or 'cuda'.")
    return dev


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch (all GPUs too). Returns the seed, which is recorded."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _session["seed"] = seed
    return seed


def seed() -> int | None:
    """The seed last given to :func:`seed_everything` (None if never seeded)."""
    return _session["seed"]  # type: ignore[return-value]


def smoke() -> bool:
    """Whether this is a smoke run (tiny step counts): set by :func:`setup` or ``$LFMLAB_SMOKE``."""
    if _session["smoke"] is not None:
        return bool(_session["smoke"])
    return _truthy(os.environ.get("LFMLAB_SMOKE"))


def cache_dir() -> Path:
    """A writable cache folder (``$LFMLAB_CACHE``, else ``~/.cache/lfmlab``), created on demand."""
    path = Path(os.environ.get("LFMLAB_CACHE") or Path.home() / ".cache" / "lfmlab").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


MODES = ("smoke", "default", "full")


@dataclass(frozen=True)
class Session:
    """What :func:`setup` chose. ``mode`` is the run length: ``"smoke"`` (CI: every method runs
    just long enough for its claim to be judged), ``"default"`` (what a learner gets: every claim,
    sized for a lab session on a laptop CPU) or ``"full"`` (the paper-scale run: more edits,
    seeds and steps, for a GPU or a long evening)."""

    device: torch.device
    seed: int
    smoke: bool
    full: bool = False

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "full" if self.full else "default"

    def pick(self, smoke, default, full=None):
        """The value for this run's length (``full`` defaults to ``default``)."""
        return smoke if self.smoke else (default if full is None else full) if self.full else default


def setup(seed: int = 0, device: str | torch.device | None = "auto", smoke: bool | None = None,
          verbose: bool = True, full: bool = False) -> Session:
    """Pick the device once, seed everything once, record the run length (``smoke``, else
    ``full``, else the default), and describe the run. ``smoke`` and ``full`` together are refused
    (a ValueError that says which to drop), changing nothing."""
    if smoke and full:
        raise ValueError("SMOKE and FULL are both True: a run is smoke (CI), default or full. "
                         "Set one of them to False.")
    chosen = globals()["device"](device)  # validate first: a bad device changes nothing
    _session["device"] = chosen
    _session["smoke"] = _truthy(os.environ.get("LFMLAB_SMOKE")) if smoke is None else bool(smoke)
    _session["full"] = bool(full) and not _session["smoke"]
    seed_everything(seed)
    if verbose:
        describe()
    return Session(chosen, int(seed), bool(_session["smoke"]), bool(_session["full"]))


def mode() -> str:
    """The run length :func:`setup` recorded: ``"smoke"``, ``"default"`` or ``"full"``."""
    return "smoke" if smoke() else "full" if _session.get("full") else "default"


def describe() -> str:
    """Print (and return) the device, seed, smoke mode, library versions and thread count."""
    import transformers

    dev = device()
    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    text = (f"lfmlab | device {dev}{gpu} | seed {seed()} | run {mode()} | "
            f"torch {torch.__version__} | transformers {transformers.__version__} | "
            f"python {platform.python_version()} | {torch.get_num_threads()} threads | "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(text)
    return text
