"""A model's parameters and mode: freezing and eval mode restored on exit, copies, counts, device.

Every method either returns a new model or gives back the one it was handed unchanged, so these
helpers always restore what they change, also after an error (``try/finally``).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its own mode restored on exit, also after an error.
    Anything that is not an ``nn.Module`` (a plain function, say) passes through untouched."""
    if not isinstance(model, nn.Module):
        yield model
        return
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen(*models: nn.Module | object) -> Iterator[None]:
    """Eval mode and no parameter gradients for every model inside the block; both restored on exit.

    Anything that is not an ``nn.Module`` (a black-box function, say) passes through untouched.
    """
    mods = [m for m in models if isinstance(m, nn.Module)]
    modes = [m.training for m in mods]
    flags = [(p, p.requires_grad) for m in mods for p in m.parameters()]
    for m in mods:
        m.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, was_training in zip(mods, modes):
            m.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def trainable(model: nn.Module, names: Iterable[str] | None = None) -> Iterator[list[nn.Parameter]]:
    """Inside the block only the parameters ``names`` (all when ``None``) take gradients; yields those
    parameters. Every ``requires_grad`` flag is restored on exit (the mode is left alone: combine
    with :func:`evaluating` for a deterministic optimisation)."""
    wanted = None if names is None else set(names)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    chosen = []
    for n, p in model.named_parameters():
        take = wanted is None or n in wanted
        p.requires_grad_(take)
        if take:
            chosen.append(p)
    try:
        yield chosen
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every parameter frozen (the starting point of every method)."""
    new = copy.deepcopy(model)
    for p in new.parameters():
        p.requires_grad_(False)
    return new


def trainable_copy(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy on ``device`` (default: the model's), in train mode, every parameter trainable.
    Methods train this copy, never the model they were given."""
    twin = copy.deepcopy(model).to(device if device is not None else device_of(model)).train()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def unfreeze(model: nn.Module, prefixes: Sequence[str] = ()) -> list[str]:
    """Make parameters whose name starts with one of ``prefixes`` trainable; returns their names.

    Methods use it for parts that must learn whatever the method (a new task head, say).
    """
    names = []
    for name, p in model.named_parameters():
        if prefixes and name.startswith(tuple(prefixes)):
            p.requires_grad_(True)
            names.append(name)
    if prefixes and not names:
        raise ValueError(f"no parameter name starts with any of {list(prefixes)}")
    return names


def count(params: Iterable[nn.Parameter] | nn.Module, trainable_only: bool = False) -> int:
    """Number of scalars in ``params`` (or a module's parameters; optionally only trainable ones)."""
    if isinstance(params, nn.Module):
        params = params.parameters()
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (dotted) of ``model`` was."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
