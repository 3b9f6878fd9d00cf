"""Few-shot episodes drawn from a *pool of classes*: a tensor [C, M, 1, 8, 8] of M images for each of C classes.

Two pools feed the digits experiments of notebook 06:

* **real, augmented** (:func:`augmented_pool`): the meta-train digits 0-4, each also rotated by
  90/180/270 degrees and mirrored, every variant counted as a class of its own: 5 x 8 = 40
  classes. Treating rotations as new classes is the standard Omniglot trick (Santoro et al.
  2016; Vinyals et al. 2016): with only five meta-train digits, it gives episodes that differ in
  *which* classes meet, not only in their order.
* **synthetic** (:func:`lfmlab.meta.dfml.invert_zoo`): images inverted from a zoo of task
  models, one pseudo-class per (model, label) pair; no real image is involved.

:func:`episodes` returns :class:`lfmlab.data.digits.Episodes`, the layout every learner of
:mod:`lfmlab.meta` takes: support_x [E, n_way * k_shot, 1, 8, 8] with labels grouped
(k_shot of label 0, then of label 1, ...), query_x [E, n_way * n_query, ...], and
``classes`` [E, n_way], the pool class behind each label.
"""
from __future__ import annotations

from typing import Sequence

import torch

from lfmlab.data.digits import Episodes, Split

TRANSFORMS = 8  # the dihedral group of the square: 4 rotations x (plain, mirrored)


def transform(x: torch.Tensor, t: int) -> torch.Tensor:
    """Rotate images x [..., H, W] by (t mod 4) x 90 degrees, then mirror them left-right if t >= 4."""
    x = torch.rot90(x, t % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if t >= 4 else x


def augmented_pool(split: Split, classes: Sequence[int], transforms: int = TRANSFORMS) -> torch.Tensor:
    """The images of ``classes`` in ``split`` under ``transforms`` transforms, as a pool [C * transforms, M, 1, 8, 8].

    Class ``t * len(classes) + i`` is digit ``classes[i]`` under transform t (t = 0 is the
    original). Every class keeps M = the smallest class count of images (a few surplus images
    of larger classes are dropped), so the pool is one rectangular tensor.
    """
    if not 1 <= transforms <= TRANSFORMS:
        raise ValueError(f"transforms must be 1..{TRANSFORMS}, got {transforms}")
    per_class = [split.x[split.y == c] for c in classes]
    m = min(len(x) for x in per_class)
    base = torch.stack([x[:m] for x in per_class])                       # [len(classes), M, 1, 8, 8]
    return torch.cat([transform(base, t) for t in range(transforms)])    # [C, M, 1, 8, 8]


def episodes(pool: torch.Tensor, n_way: int = 5, k_shot: int = 1, n_query: int = 15, n_episodes: int = 1,
             generator: torch.Generator | None = None) -> Episodes:
    """Sample few-shot episodes from ``pool`` [C, M, ...]: ``n_way`` distinct classes in a random
    order (the order is the label), then ``k_shot + n_query`` distinct images of each.

    All episodes are drawn at once (random keys, argsort), on the pool's device.
    """
    c, m = pool.shape[:2]
    per = k_shot + n_query
    if not 1 <= n_way <= c:
        raise ValueError(f"n_way={n_way} needs 1..{c} classes; the pool has {c}")
    if k_shot < 1 or n_query < 0 or per > m or n_episodes < 1:
        raise ValueError(f"need k_shot >= 1, n_query >= 0, k_shot + n_query <= {m} (images per class) "
                         f"and n_episodes >= 1; got k_shot={k_shot}, n_query={n_query}, n_episodes={n_episodes}")
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    dev = pool.device
    chosen = torch.rand(n_episodes, c, generator=generator, device=gen_dev).argsort(1)[:, :n_way].to(dev)
    rows = torch.rand(n_episodes, n_way, m, generator=generator, device=gen_dev).argsort(2)[..., :per].to(dev)
    images = pool[chosen[..., None], rows]                                # [E, n_way, per, 1, 8, 8]
    labels = torch.arange(n_way, device=dev)
    return Episodes(
        support_x=images[:, :, :k_shot].flatten(1, 2),
        support_y=labels.repeat_interleave(k_shot).expand(n_episodes, -1).clone(),
        query_x=images[:, :, k_shot:].flatten(1, 2),
        query_y=labels.repeat_interleave(n_query).expand(n_episodes, -1).clone(),
        classes=chosen)


def sampler(pool: torch.Tensor, n_way: int = 5, k_shot: int = 1, n_query: int = 15):
    """A task sampler for :func:`lfmlab.meta.maml.meta_train`: (n_tasks, generator) -> Episodes from ``pool``."""
    return lambda n, generator=None: episodes(pool, n_way, k_shot, n_query, n, generator)
