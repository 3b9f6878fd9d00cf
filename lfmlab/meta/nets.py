"""The small networks of the meta-learning notebook: a spatial conv embedding and a classifier on it.

Both are plain ``nn.Module`` s without BatchNorm, so ``torch.func.functional_call`` + ``vmap``
can run one copy per task with no running statistics to keep (MAML's inner loop), and one
image's output never depends on the rest of its batch.
"""
from __future__ import annotations

import torch
from torch import nn

from lfmlab import runtime


class ConvEmbedding(nn.Module):
    """conv3x3(1->c)-ReLU, conv3x3(c->c)-ReLU, max-pool 2, flatten: x [N, 1, 8, 8] -> [N, 16 c].

    No global pooling: on 8x8 digits *where* a stroke is matters, so the embedding keeps the
    4x4 spatial layout. The convolutions share weights across positions, an inductive bias
    that carries over from the meta-train digits to new ones (an MLP's does not; notebook 06).
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.channels = int(channels)
        self.net = nn.Sequential(nn.Conv2d(1, self.channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(self.channels, self.channels, 3, padding=1), nn.ReLU(),
                                 nn.MaxPool2d(2), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, 1, 8, 8))


class ConvClassifier(nn.Module):
    """``features`` = :class:`ConvEmbedding`, ``head`` = Linear(16 c -> n_classes):
    x [N, 1, 8, 8] -> logits [N, n_classes].

    The layout (``.features`` + ``.head``) of the zoo's digits models, so ANIL finds its head.
    """

    def __init__(self, channels: int = 16, n_classes: int = 5):
        super().__init__()
        self.features = ConvEmbedding(channels)
        self.head = nn.Linear(16 * self.features.channels, int(n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def seeded(factory, seed: int | None = None, device: str | torch.device | None = None, **kwargs) -> nn.Module:
    """``factory(**kwargs)`` on ``device``; with ``seed``, initialised from it without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        return factory(**kwargs).to(runtime.device(device))


def embedding(channels: int = 16, seed: int | None = None, device: str | torch.device | None = None) -> ConvEmbedding:
    """A fresh :class:`ConvEmbedding` (the ProtoNet f_φ)."""
    return seeded(ConvEmbedding, seed, device, channels=channels)


def classifier(channels: int = 16, n_classes: int = 5, seed: int | None = None,
               device: str | torch.device | None = None) -> ConvClassifier:
    """A fresh :class:`ConvClassifier` (the MAML learner on digits and the DFML zoo architecture)."""
    return seeded(ConvClassifier, seed, device, channels=channels, n_classes=n_classes)
