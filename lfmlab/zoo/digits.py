"""The digits models of the zoo: small CNNs with BatchNorm and MLPs on :mod:`lfmlab.data.digits`.

>>> from lfmlab import zoo
>>> teacher = zoo.load("digits-teacher").model      # DigitsCNN, eval mode
>>> mlps = [zoo.load(f"digits-mlp-{i}").model for i in range(5)]
>>> fresh = build("digits-student")                 # an untrained instance of an architecture

=================  ===========================================================  ==============
name               what                                                         used by
=================  ===========================================================  ==============
digits-teacher     CNN, 3 x (conv3x3-BN-ReLU) + max-pool + GAP + linear, ~57k   distillation
                   parameters, trained on all 10 digits (>= 98 % test)          (DeepInversion
                                                                                matches its BN
                                                                                statistics)
digits-student     the same CNN, ~9x narrower (~6k parameters), UNTRAINED: the  distillation
                   committed weights are its seeded initialisation, so every
                   student starts from the same point
digits-mlp-0..4    MLP 64-64-64-10 (ReLU) on all 10 digits, five seeds          ensembles, soups,
                   (different init and data order)                              connectivity,
                                                                                Git Re-Basin
digits-backbone    MLP trunk 64-128-128 (``.features``) + linear head           task arithmetic,
                   (``.head``), pretrained on digits 0-4 only ("digits0-4")     TIES, merging
=================  ===========================================================  ==============

Every model has a feature trunk ``.features`` and a linear classifier ``.head``, takes images
[B, 1, 8, 8] (MLPs also take [B, 64]) and returns logits [B, n_classes]. To reuse the
backbone on a new task, attach a fresh head: ``model.reset_head(n_classes)`` (in place), or
``model.head = torch.nn.Linear(model.head.in_features, n_classes)``.

Recipes run on the CPU with one thread, so they are reproducible bit for bit on one machine
and torch version; rerun one with ``python -m lfmlab.zoo train digits-teacher``. The torch seed
of a recipe is ``--seed`` (default 0), and ``1000 * seed + i`` for ``digits-mlp-i``. Each card's
``recipe`` holds the architecture (``arch`` and its sizes), which :func:`build` and
:func:`load` read, and the training hyper-parameters.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from lfmlab.core.params import device_of, evaluating
from lfmlab.core.schedules import cosine
from lfmlab.zoo.card import ModelCard, record

__all__ = ["NAMES", "load", "train", "build", "DigitsCNN", "DigitsMLP", "accuracy", "RECIPES",
           "parameter_count"]

N_MLPS = 5
NAMES = ("digits-teacher", "digits-student", *(f"digits-mlp-{i}" for i in range(N_MLPS)), "digits-backbone")


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits, with BatchNorm (running statistics) after every conv.

    ``features``: conv3x3(1->c1)-BN-ReLU, conv3x3(c1->c2)-BN-ReLU, max-pool 2 (8x8 -> 4x4),
    conv3x3(c2->c3)-BN-ReLU, global average pool -> [B, c3].  ``head``: linear(c3 -> n_classes).

    Input x [B, 1, 8, 8] in [0, 1]; output logits [B, n_classes]. The BN layers are
    ``nn.BatchNorm2d`` (``bn_layers()`` lists them), whose running mean/var DeepInversion matches.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 64), n_classes: int = 10):
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.channels, self.n_classes = (c1, c2, c3), int(n_classes)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, c1), *block(c1, c2), nn.MaxPool2d(2), *block(c2, c3),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c3, self.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # [B, 64] vectors
            x = x.reshape(-1, 1, 8, 8)
        return self.head(self.features(x))

    def bn_layers(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    def reset_head(self, n_classes: int) -> "DigitsCNN":
        """Replace the head by a freshly initialised linear(c3 -> n_classes), in place; returns self."""
        self.n_classes = int(n_classes)
        ref = self.head.weight
        self.head = nn.Linear(self.head.in_features, self.n_classes).to(ref.device, ref.dtype)
        return self

    def describe(self) -> str:
        c1, c2, c3 = self.channels
        return (f"DigitsCNN: conv3x3(1->{c1})-BN-ReLU, conv3x3({c1}->{c2})-BN-ReLU, maxpool2, "
                f"conv3x3({c2}->{c3})-BN-ReLU, global avg pool, linear({c3}->{self.n_classes})")


class DigitsMLP(nn.Module):
    """An MLP on the 64 pixels: ``features`` = (Linear-ReLU) per hidden width, ``head`` = Linear.

    ``DigitsMLP((64, 64), 10)`` is 64-64-64-10: ``features.0`` (64->64), ``features.2``
    (64->64), ``head`` (64->10). Input x [B, 1, 8, 8] or [B, 64]; output logits [B, n_classes].
    """

    def __init__(self, hidden: Sequence[int] = (64, 64), n_classes: int = 10, in_features: int = 64):
        super().__init__()
        self.hidden, self.n_classes, self.in_features = tuple(int(h) for h in hidden), int(n_classes), int(in_features)
        layers: list[nn.Module] = []
        width = self.in_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.flatten(1)))

    def reset_head(self, n_classes: int) -> "DigitsMLP":
        """Replace the head by a freshly initialised linear(width -> n_classes), in place; returns self."""
        self.n_classes = int(n_classes)
        ref = self.head.weight
        self.head = nn.Linear(self.head.in_features, self.n_classes).to(ref.device, ref.dtype)
        return self

    def describe(self) -> str:
        sizes = "-".join(str(s) for s in (self.in_features, *self.hidden, self.n_classes))
        return f"DigitsMLP {sizes} (ReLU): features = {len(self.hidden)} x (Linear-ReLU), head = Linear"


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------

_COMMON = {"optimizer": "AdamW", "schedule": "cosine, per step, to 0", "device": "cpu", "threads": 1}

RECIPES: dict[str, dict[str, Any]] = {
    "digits-teacher": {"arch": "cnn", "channels": [32, 64, 64], "n_classes": 10, "task": "digits",
                       "epochs": 30, "batch_size": 64, "lr": 3e-3, "weight_decay": 5e-2, **_COMMON},
    "digits-student": {"arch": "cnn", "channels": [8, 16, 32], "n_classes": 10, "task": "digits",
                       "epochs": 0},
    **{f"digits-mlp-{i}": {"arch": "mlp", "hidden": [64, 64], "n_classes": 10, "task": "digits", "member": i,
                           "epochs": 40, "batch_size": 32, "lr": 5e-3, "weight_decay": 1e-4, **_COMMON}
       for i in range(N_MLPS)},
    "digits-backbone": {"arch": "mlp", "hidden": [128, 128], "n_classes": 5, "task": "digits0-4",
                        "epochs": 40, "batch_size": 32, "lr": 5e-3, "weight_decay": 1e-4, **_COMMON},
}

_SUMMARIES = {
    "digits-teacher": "CNN teacher with BatchNorm, trained on all 10 digits; DeepInversion matches "
                      "its BatchNorm statistics",
    "digits-student": "small CNN student, UNTRAINED: the weights are its seeded initialisation, so "
                      "every distillation run starts from the same point",
    "digits-backbone": "MLP backbone (trunk .features + head .head) pretrained on digits 0-4 only; "
                       "fine-tune it per task, then merge (task arithmetic, TIES, ...)",
}


def _summary(name: str) -> str:
    if name.startswith("digits-mlp-"):
        return (f"MLP 64-64-64-10, member {name.rsplit('-', 1)[1]} of a family of {N_MLPS} trained from "
                f"different seeds (init and data order); for ensembles, soups, connectivity, Git Re-Basin")
    return _SUMMARIES[name]


def build(name_or_recipe: str | dict[str, Any], seed: int | None = None) -> nn.Module:
    """A fresh, untrained instance of a zoo architecture: a zoo name or a recipe dict (``arch`` + sizes).

    With ``seed``, the initialisation is drawn from ``torch.manual_seed(seed)`` without
    touching the global RNG; without, from the global RNG. The model is in train mode on the CPU.
    """
    if isinstance(name_or_recipe, str) and name_or_recipe not in RECIPES:
        raise KeyError(f"{name_or_recipe!r} is not a digits model; names: {', '.join(NAMES)}")
    recipe = RECIPES[name_or_recipe] if isinstance(name_or_recipe, str) else name_or_recipe

    def make() -> nn.Module:
        if recipe["arch"] == "cnn":
            return DigitsCNN(recipe["channels"], recipe["n_classes"])
        if recipe["arch"] == "mlp":
            return DigitsMLP(recipe["hidden"], recipe["n_classes"], recipe.get("in_features", 64))
        raise ValueError(f"unknown digits architecture {recipe['arch']!r} (use 'cnn' or 'mlp')")

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return make()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode, restored afterwards) on x [N, 1, 8, 8], y [N]."""
    with evaluating(model):
        dev = device_of(model)
        correct = 0
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size].to(dev))
            correct += int((logits.argmax(-1) == y[i:i + batch_size].to(dev)).sum())
        return correct / max(len(y), 1)


@contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _task_splits(task: str):
    from lfmlab.data import digits as data

    d = data.load("cpu")
    return {name: data.relabel(split, task)[0] for name, split in d.splits().items()}


def _fit(model: nn.Module, split, recipe: dict[str, Any], epochs: int, generator: torch.Generator) -> list[float]:
    """Train ``model`` on ``split`` (CPU) with AdamW and a per-step cosine schedule; returns epoch losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    batches = split.loader(recipe["batch_size"], shuffle=True, generator=generator)
    total = max(epochs * len(batches), 1)
    sched = cosine(opt, total)
    losses = []
    model.train()
    for _ in range(epochs):
        running = torch.zeros(())
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach() * len(y)
        losses.append(float(running) / len(split))
    model.eval()
    return losses


def _seed_for(name: str, seed: int) -> int:
    """The torch seed of a recipe: ``seed`` itself, or ``1000 * seed + i`` for digits-mlp-i."""
    recipe = RECIPES[name]
    return 1000 * int(seed) + recipe["member"] if "member" in recipe else int(seed)


def train(name: str, out_dir: str | Path, smoke: bool = False, seed: int = 0) -> ModelCard:
    """Rerun ``name``'s recipe on the CPU (one thread, deterministic) and write model.safetensors + card.json.

    ``smoke`` runs a few epochs only (for tests); its card says so in ``notes``.
    """
    from safetensors.torch import save_file

    if name not in RECIPES:
        raise KeyError(f"{name!r} is not a digits model; names: {', '.join(NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = dict(RECIPES[name])
    torch_seed = _seed_for(name, seed)
    full_epochs = recipe["epochs"]
    epochs = min(full_epochs, 3) if smoke else full_epochs
    recipe.update(seed=int(seed), torch_seed=torch_seed, epochs=epochs)
    start = time.perf_counter()
    with _one_thread():
        model = build(recipe, seed=torch_seed)
        splits = _task_splits(recipe["task"])
        generator = torch.Generator().manual_seed(torch_seed)
        losses = _fit(model, splits["train"], recipe, epochs, generator) if epochs else []
        model.eval()
        quality: dict[str, Any] = {
            "test_accuracy": accuracy(model, splits["test"].x, splits["test"].y),
            "val_accuracy": accuracy(model, splits["val"].x, splits["val"].y),
            "train_accuracy": accuracy(model, splits["train"].x, splits["train"].y),
        }
        reference = None
        if epochs == 0 and recipe["arch"] == "cnn":
            # The supervised ceiling for distillation: this architecture and init, trained on the
            # real train split with the teacher's hyper-parameters (the committed weights stay untrained).
            ref_recipe = {**RECIPES["digits-teacher"], "channels": recipe["channels"]}
            ref_epochs = min(ref_recipe["epochs"], 3) if smoke else ref_recipe["epochs"]
            ref_model = build(recipe, seed=torch_seed)
            _fit(ref_model, splits["train"], ref_recipe, ref_epochs, torch.Generator().manual_seed(torch_seed))
            reference = {"test_accuracy": accuracy(ref_model, splits["test"].x, splits["test"].y),
                         "how": f"same architecture and initialisation trained on the real train split for "
                                f"{ref_epochs} epochs with the digits-teacher recipe: the ceiling a "
                                f"distilled student can hope for"}
    seconds = time.perf_counter() - start
    n_classes = recipe["n_classes"]
    if epochs == 0:
        quality["chance_accuracy"] = 1 / n_classes
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # No safetensors metadata: its keys are written in hash-map order, which changes from process
    # to process and would make the file's sha256 irreproducible.
    save_file(state, str(out / "model.safetensors"))

    from lfmlab.data import digits as data
    task_sizes = {k: len(v) for k, v in splits.items()}
    trained_on = (f"untrained (seeded initialisation, torch seed {torch_seed}); evaluated on the "
                  f"lfmlab.data.digits test split, task '{recipe['task']}'" if epochs == 0 else
                  f"lfmlab.data.digits train split, task '{recipe['task']}' ({n_classes} classes, "
                  f"{task_sizes['train']} images; split seed {data.SPLIT_SEED}); quality on its val "
                  f"({task_sizes['val']}) and test ({task_sizes['test']}) splits")
    notes: dict[str, Any] = {"train_seconds": round(seconds, 2), "final_train_loss": losses[-1] if losses else None,
                             "torch": torch.__version__}
    if reference is not None:
        notes["supervised_reference"] = reference
    if smoke:
        notes["smoke"] = f"smoke run: {epochs} of {full_epochs} epochs; not the committed model"
    if name == "digits-backbone":
        notes["new_head"] = "model.reset_head(n_classes), or model.head = nn.Linear(model.head.in_features, n_classes)"
    card = ModelCard(
        name=name, summary=_summary(name), architecture=model.describe(),
        parameters=parameter_count(model), trained_on=trained_on, quality=quality,
        regenerate=f"python -m lfmlab.zoo train {name}" + (f" --seed {seed}" if seed else ""),
        source="untrained" if epochs == 0 else "committed", recipe=recipe, notes=notes)
    return record(out, card, ["model.safetensors"])


def load(name: str) -> tuple[nn.Module, None, ModelCard]:
    """The committed ``name`` (sha256 checked), as a fresh module in eval mode on the CPU."""
    from safetensors.torch import load_file

    from lfmlab.zoo import load_committed

    if name not in NAMES:
        raise KeyError(f"{name!r} is not a digits model; names: {', '.join(NAMES)}")
    card, folder = load_committed(name)
    model = build(card.recipe)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.eval(), None, card
