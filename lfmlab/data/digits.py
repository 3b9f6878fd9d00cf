"""scikit-learn's 8x8 handwritten digits, split once and for all, plus the task builders
that the distillation, reuse and meta-learning notebooks are made of.

>>> from lfmlab.data import digits
>>> d = digits.load()                      # tensors on the session's device
>>> d.train.x.shape, d.train.y.dtype       # images in [0, 1], labels int64
(torch.Size([1079, 1, 8, 8]), torch.int64)
>>> parity, k = digits.relabel(d.train, "parity")      # labels y % 2, k == 2
>>> ep = digits.episodes(d.train, digits.META_TRAIN_CLASSES, n_way=5, k_shot=1, n_query=5,
...                      n_episodes=32, generator=torch.Generator().manual_seed(0))
>>> ep.support_x.shape                     # [episodes, n_way * k_shot, 1, 8, 8]
torch.Size([32, 5, 1, 8, 8])

The data (``sklearn.datasets.load_digits``) ships inside scikit-learn: nothing is downloaded.
It has 1,797 grey-scale 8x8 images with pixel values 0..16, which :func:`load` scales to [0, 1].

**Splits** (fixed, exactly stratified): within each class the images are shuffled by NumPy's
legacy ``RandomState(SPLIT_SEED)`` (its stream is frozen across NumPy versions), then
round(20 %) go to test, round(20 %) to val and the rest to train. Sizes:
train 1,079 / val 359 / test 359 (each class 104-110 / 35-37 / 35-37). Within a split the
images keep the order of ``load_digits``; ``Split.index`` holds those original row numbers.

**Meta-learning class split**: :data:`META_TRAIN_CLASSES` = 0-4 and :data:`META_TEST_CLASSES`
= 5-9, five classes each, so that 5-way episodes exist on both sides (10 classes cannot give
more than 5 + 5). With only five meta-train classes, every 5-way meta-train episode holds the
same five digits: what varies is the images and, above all, which digit gets which label
(:func:`episodes` draws a fresh random class-to-label assignment per episode), so a learner
cannot memorise "label 3 is a seven" and has to adapt from the support set. Use 2- or 3-way
episodes for more variety in which classes meet. Meta-test on the test split (35-37 images
per class, so ``k_shot + n_query <= 35``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from lfmlab import runtime

__all__ = ["load", "Digits", "Split", "Batches", "Episodes", "SPLIT_SEED", "SPLIT_FRACTIONS",
           "N_CLASSES", "META_TRAIN_CLASSES", "META_TEST_CLASSES", "TASKS", "class_subset",
           "relabel", "rotated", "flipped", "inverted", "episodes"]

SPLIT_SEED = 0
SPLIT_FRACTIONS = {"val": 0.2, "test": 0.2}  # per class, rounded; train takes the rest
N_CLASSES = 10
META_TRAIN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4)
META_TEST_CLASSES: tuple[int, ...] = (5, 6, 7, 8, 9)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """One split: images ``x`` [N, 1, 8, 8] float32 in [0, 1], labels ``y`` [N] int64, and
    ``index`` [N] int64, the rows of ``sklearn.datasets.load_digits`` they came from
    (task builders keep it, so a derived split still says which images it holds)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return f"Split({len(self)} images, x {tuple(self.x.shape)}, labels {self.y.unique().tolist()}, {self.x.device})"

    @property
    def device(self) -> torch.device:
        return self.x.device

    def flat(self) -> torch.Tensor:
        """The images as vectors, [N, 64] (for MLPs)."""
        return self.x.flatten(1)

    def to(self, device: str | torch.device | None = None) -> "Split":
        dev = runtime.device(device)
        return Split(self.x.to(dev), self.y.to(dev), self.index.to(dev))

    def subset(self, rows: torch.Tensor | Sequence[int]) -> "Split":
        """The rows ``rows`` (indices or a boolean mask) of this split, as a new Split."""
        rows = torch.as_tensor(rows, device=self.x.device)
        return Split(self.x[rows], self.y[rows], self.index[rows])

    def counts(self, n_classes: int | None = None) -> torch.Tensor:
        """Images per label, [n_classes] int64."""
        return torch.bincount(self.y, minlength=n_classes or 0)

    def loader(self, batch_size: int = 64, shuffle: bool = True,
               generator: torch.Generator | None = None, drop_last: bool = False) -> "Batches":
        """Mini-batches ``(x [B, 1, 8, 8], y [B])`` that stay on the split's device.

        A light stand-in for ``torch.utils.data.DataLoader`` (whose per-batch overhead is many
        times the cost of a batch this small). Each pass over it reshuffles when ``shuffle``;
        pass a seeded ``generator`` for a reproducible order.
        """
        return Batches(self, batch_size, shuffle, generator, drop_last)


class Batches:
    """An iterable of mini-batches over a :class:`Split` (see :meth:`Split.loader`)."""

    def __init__(self, split: Split, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self.generator, self.drop_last = generator, drop_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, x, y = len(self.split), self.split.x, self.split.y
        if self.shuffle:
            gen_device = self.generator.device if self.generator is not None else "cpu"
            order = torch.randperm(n, generator=self.generator, device=gen_device).to(x.device)
        else:
            order = None
        for b in range(len(self)):
            if order is None:
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield x[sl], y[sl]
            else:
                rows = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield x[rows], y[rows]


@dataclass(frozen=True)
class Digits:
    """The three splits, on one device. ``n_classes`` = 10, ``image_shape`` = (1, 8, 8)."""

    train: Split
    val: Split
    test: Split
    n_classes: int = N_CLASSES
    image_shape: tuple[int, int, int] = (1, 8, 8)

    def __repr__(self) -> str:
        return (f"Digits(train {len(self.train)}, val {len(self.val)}, test {len(self.test)}; "
                f"{self.n_classes} classes, {self.image_shape} images, {self.train.device})")

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}


@lru_cache(maxsize=1)
def _arrays() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (x [N, 1, 8, 8] float32, y [N] int64, index [N] int64), computed once (read-only)."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = (raw.images.astype(np.float32) / 16.0)[:, None]
    target = raw.target.astype(np.int64)
    rng = np.random.RandomState(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(target == c))
        n_test = int(round(SPLIT_FRACTIONS["test"] * len(rows)))
        n_val = int(round(SPLIT_FRACTIONS["val"] * len(rows)))
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test:n_test + n_val])
        parts["train"].append(rows[n_test + n_val:])
    out = {}
    for name, chunks in parts.items():
        index = np.sort(np.concatenate(chunks))
        arrays = (images[index], target[index], index.astype(np.int64))
        for a in arrays:
            a.setflags(write=False)
        out[name] = arrays
    return out


def load(device: str | torch.device | None = None) -> Digits:
    """The digits splits as tensors on ``device`` (default: the session's device).

    Each call returns new tensors, so changing them in place never leaks into another call.
    """
    dev = runtime.device(device)
    splits = {name: Split(*(torch.tensor(a, device=dev) for a in arrays))
              for name, arrays in _arrays().items()}
    return Digits(**splits)


# --------------------------------------------------------------------------------------------
# Task builders: label changes (for task arithmetic and merging) and input shifts
# --------------------------------------------------------------------------------------------

def class_subset(split: Split, classes: Sequence[int]) -> Split:
    """Keep only ``classes`` and relabel them 0..k-1 in the order given (few-shot tasks, class-incremental data)."""
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes) or not all(0 <= c < N_CLASSES for c in classes):
        raise ValueError(f"classes must be distinct digits 0..9, got {classes}")
    lookup = torch.full((N_CLASSES,), -1, dtype=torch.int64, device=split.y.device)
    lookup[torch.tensor(classes, device=split.y.device)] = torch.arange(len(classes), device=split.y.device)
    new = lookup[split.y]
    keep = new >= 0
    return Split(split.x[keep], new[keep], split.index[keep])


def _mapping(fn: Callable[[int], int]) -> tuple[int, ...]:
    return tuple(int(fn(d)) for d in range(N_CLASSES))


# name -> (label of each digit 0..9, -1 = drop that digit; number of classes). All tasks are
# defined on the digit label alone, so one image keeps one meaning per task.
TASKS: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": (_mapping(lambda d: d), 10),                        # the original 10-way task
    "digits0-4": (_mapping(lambda d: d if d < 5 else -1), 5),     # backbone pretraining; meta-train classes
    "digits5-9": (_mapping(lambda d: d - 5 if d >= 5 else -1), 5),  # the other half, relabelled 0..4
    "parity": (_mapping(lambda d: d % 2), 2),                     # even 0 / odd 1
    "greater4": (_mapping(lambda d: int(d > 4)), 2),              # 0-4 -> 0, 5-9 -> 1
    "prime": (_mapping(lambda d: int(d in (2, 3, 5, 7))), 2),     # prime digit -> 1
    "mod3": (_mapping(lambda d: d % 3), 3),
    "mod4": (_mapping(lambda d: d % 4), 4),
    "mod5": (_mapping(lambda d: d % 5), 5),
    "reversed": (_mapping(lambda d: 9 - d), 10),                  # a permutation of the 10 labels
}


def relabel(split: Split, task: str) -> tuple[Split, int]:
    """A named task of :data:`TASKS` on ``split``: returns (new Split, n_classes); digits the task drops are removed.

    For model reuse (task arithmetic, TIES, merging): fine-tune one backbone per task, then merge.
    """
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    mapping, n_classes = TASKS[task]
    lookup = torch.tensor(mapping, dtype=torch.int64, device=split.y.device)
    new = lookup[split.y]
    keep = new >= 0
    if bool(keep.all()):
        return Split(split.x, new, split.index), n_classes
    return Split(split.x[keep], new[keep], split.index[keep]), n_classes


def rotated(split: Split, k: int = 1) -> Split:
    """The images rotated by k x 90 degrees counter-clockwise, labels unchanged (an input shift for robustness/OOD)."""
    return replace(split, x=torch.rot90(split.x, int(k), dims=(-2, -1)))


_FLIP_DIMS = {"lr": -1, "horizontal": -1, "ud": -2, "vertical": -2}


def flipped(split: Split, axis: str = "lr") -> Split:
    """The images mirrored, ``axis="lr"`` left-right or ``"ud"`` upside down, labels unchanged (an input shift)."""
    if axis not in _FLIP_DIMS:
        raise ValueError(f"axis must be one of {', '.join(_FLIP_DIMS)}, got {axis!r}")
    return replace(split, x=torch.flip(split.x, dims=(_FLIP_DIMS[axis],)))


def inverted(split: Split) -> Split:
    """The images with ink and paper swapped (1 - x), labels unchanged (an input shift that
    breaks BatchNorm statistics)."""
    return replace(split, x=1.0 - split.x)


# --------------------------------------------------------------------------------------------
# Few-shot episodes (meta-learning), batched for torch.func.vmap
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Episodes:
    """E few-shot episodes, stacked along dim 0 so a learner can ``vmap`` over them.

    support_x [E, n_way * k_shot, 1, 8, 8], support_y [E, n_way * k_shot] (labels 0..n_way-1,
    grouped: k_shot of label 0, then of label 1, ...), query_x [E, n_way * n_query, 1, 8, 8],
    query_y [E, n_way * n_query], classes [E, n_way] (the digit behind each label:
    label j of episode e is digit ``classes[e, j]``). Unpacks as
    ``support_x, support_y, query_x, query_y = episodes``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor

    def __iter__(self):
        return iter((self.support_x, self.support_y, self.query_x, self.query_y))

    def __len__(self) -> int:
        return int(self.support_y.shape[0])

    def __getitem__(self, item) -> "Episodes":
        """A slice of the episodes (``eps[:8]``, ``eps[idx]``), still batched."""
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        return Episodes(self.support_x[item], self.support_y[item], self.query_x[item],
                        self.query_y[item], self.classes[item])

    def to(self, device: str | torch.device | None = None) -> "Episodes":
        dev = runtime.device(device)
        return Episodes(*(t.to(dev) for t in (self.support_x, self.support_y, self.query_x,
                                              self.query_y, self.classes)))


def episodes(split: Split, classes: Sequence[int], n_way: int = 5, k_shot: int = 1, n_query: int = 15,
             n_episodes: int = 1, generator: torch.Generator | None = None) -> Episodes:
    """Sample few-shot episodes from ``split`` using only ``classes`` (meta-learning: MAML, ProtoNets, DFML).

    Each episode draws ``n_way`` distinct classes from ``classes`` in a random order (the order
    is the label: a fresh class-to-label assignment per episode), then ``k_shot + n_query``
    distinct images of each; the support and query sets of an episode never share an image.
    ``split`` must hold the original digit labels 0..9. All episodes are drawn at once, with no
    Python loop over them; ``generator`` (a seeded ``torch.Generator``) makes them reproducible.
    Returns :class:`Episodes` on the split's device.
    """
    classes_t = torch.as_tensor(list(classes), dtype=torch.int64)
    if len(set(classes_t.tolist())) != len(classes_t):
        raise ValueError(f"classes must be distinct, got {list(classes)}")
    if not 1 <= n_way <= len(classes_t):
        raise ValueError(f"n_way={n_way} needs 1..{len(classes_t)} classes, and {len(classes_t)} were given")
    if k_shot < 1 or n_query < 0 or n_episodes < 1:
        raise ValueError("need k_shot >= 1, n_query >= 0 and n_episodes >= 1")
    per = k_shot + n_query
    y_cpu = split.y.cpu()
    counts = torch.bincount(y_cpu, minlength=N_CLASSES)
    short = [int(c) for c in classes_t if counts[c] < per]
    if short:
        raise ValueError(f"classes {short} have fewer than k_shot + n_query = {per} images in this split "
                         f"(counts {counts[short].tolist()}); lower k_shot or n_query")
    # A table of each class's rows, padded with -1: [10, max_count].
    order = torch.argsort(y_cpu, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    max_count = int(counts.max())
    slot = torch.arange(max_count)
    table = torch.where(slot < counts[:, None], order[(starts[:, None] + slot).clamp_max(len(order) - 1)],
                        torch.tensor(-1))
    # Draw by sorting random keys: the n_way classes, then per (episode, class) `per` rows.
    gen_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(n_episodes, len(classes_t), generator=generator, device=gen_device).cpu()
    chosen = classes_t[keys.argsort(dim=1)[:, :n_way]]                       # [E, n_way]
    candidates = table[chosen]                                               # [E, n_way, M]
    keys = torch.rand(candidates.shape, generator=generator, device=gen_device).cpu()
    keys = keys.masked_fill(candidates < 0, 2.0)
    picked = candidates.gather(-1, keys.argsort(dim=-1)[..., :per])          # [E, n_way, per]
    dev = split.x.device
    support = picked[..., :k_shot].reshape(n_episodes, n_way * k_shot).to(dev)
    query = picked[..., k_shot:].reshape(n_episodes, n_way * n_query).to(dev)
    labels = torch.arange(n_way, device=dev)
    return Episodes(
        support_x=split.x[support], support_y=labels.repeat_interleave(k_shot).expand(n_episodes, -1).clone(),
        query_x=split.x[query], query_y=labels.repeat_interleave(n_query).expand(n_episodes, -1).clone(),
        classes=chosen.to(dev))
