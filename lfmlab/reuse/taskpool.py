"""A pool of task models fine-tuned from one pretrained backbone: the test bed of merging (survey §4.2).

The recipe follows the task-vector papers (Ilharco et al. 2023; FusionBench's CLIP setting):

1. **probe**: for each task, a linear head is fitted on the *frozen* pretrained trunk
   (``backbone.features``). This head is the task's classifier for good: it plays the part of
   CLIP's zero-shot text head. The pretrained trunk + this head is the "pretrained" baseline.
2. **fine-tune**: the trunk is fine-tuned on the task with the head frozen. The task vector is
   τ_t = θ_t − θ_pre over the trunk's keys.

Tasks have different label spaces (2 to 10 classes), so heads cannot be merged. We merge the
shared trunk only and keep each task's own head: the merged model for task t is
(merged trunk, head_t). Because every head was fitted to the *pretrained* feature space, a merged
trunk that stays near θ_pre keeps working with all the heads.

Nothing is written to disk: :func:`finetune_tasks` takes a few seconds on a CPU.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from lfmlab import runtime
from lfmlab.core.schedules import cosine
from lfmlab.core.state import StateDict, merge_keys, state_of

__all__ = ["DEFAULT_TASKS", "SHIFTS", "TaskPool", "finetune_tasks", "probe_head", "task_split"]

# Eight relabelings of the digits, none of them the backbone's pretraining task (digits0-4).
DEFAULT_TASKS: tuple[str, ...] = ("digits5-9", "parity", "greater4", "prime", "mod3", "mod4", "mod5", "reversed")


@dataclass
class TaskPool:
    """The pretrained backbone, one fine-tuned trunk and one frozen head per task, and the task data.

    ``backbone``: the pretrained model (never modified); ``pretrained``: its state dict;
    ``finetuned[t]``: the full state of task t's model (fine-tuned trunk + head_t);
    ``trunk_keys``: the keys merging acts on (``features.*``); ``splits[t]``: the relabelled
    ``{"train", "val", "test"}`` splits; ``templates[t]``: the backbone with head_t (used with
    ``torch.func.functional_call``, so they are never changed).
    """

    tasks: list[str]
    backbone: nn.Module
    pretrained: StateDict
    finetuned: dict[str, StateDict]
    trunk_keys: list[str]
    splits: dict[str, dict]
    n_classes: dict[str, int]
    templates: dict[str, nn.Module] = field(repr=False)
    seconds: float = 0.0
    hyper: dict = field(default_factory=dict)
    control_task: str = "digits0-4"
    control_data: dict = field(default_factory=dict, repr=False)

    # ---- views -------------------------------------------------------------------------
    def trunk(self, task: str | None = None) -> StateDict:
        """The trunk of task ``task``'s fine-tuned model (None: the pretrained trunk)."""
        src = self.pretrained if task is None else self.finetuned[task]
        return {k: src[k] for k in self.trunk_keys}

    def trunks(self, tasks: Sequence[str] | None = None) -> list[StateDict]:
        return [self.trunk(t) for t in (tasks or self.tasks)]

    def model(self, task: str, trunk: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A new nn.Module for ``task``: ``trunk`` (default: its own fine-tuned one) + head_t."""
        m = copy.deepcopy(self.templates[task])
        m.load_state_dict({k: v.clone() for k, v in (trunk or self.trunk(task)).items()}, strict=False)
        return m.eval()

    # ---- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, task: str, trunk: Mapping[str, torch.Tensor], split: str = "test") -> torch.Tensor:
        """Task ``task``'s logits [N, C_t] on its ``split`` with the trunk ``trunk`` and head_t."""
        from torch.func import functional_call

        return functional_call(self.templates[task], dict(trunk), (self.splits[task][split].x,))

    def accuracy(self, trunk: Mapping[str, torch.Tensor] | None = None, split: str = "test",
                 tasks: Sequence[str] | None = None) -> dict[str, float]:
        """task -> accuracy of (``trunk``, head_t) on the task's ``split``; ``trunk=None``: each task's own."""
        out = {}
        for t in tasks or self.tasks:
            logits = self.logits(t, trunk if trunk is not None else self.trunk(t), split)
            out[t] = float((logits.argmax(-1) == self.splits[t][split].y).float().mean())
        return out

    def accuracy_batch(self, trunks: Mapping[str, torch.Tensor], split: str = "test",
                       tasks: Sequence[str] | None = None) -> torch.Tensor:
        """Accuracies of m trunks at once: ``trunks`` key -> [m, *shape]; returns [m, T] on the CPU
        (vmap over m; a result to read and plot, wherever the trunks live)."""
        from lfmlab.core.state import functional_eval

        cols = [functional_eval(self.templates[t], trunks, self.splits[t][split].x, self.splits[t][split].y)[1]
                for t in tasks or self.tasks]
        return torch.stack(cols, dim=1).cpu()

    def ensemble_accuracy(self, split: str = "test", tasks: Sequence[str] | None = None,
                          members: Sequence[str] | None = None) -> dict[str, float]:
        """The output-space counterpart of averaging (survey eq. 8, λ_i = 1/n): task t's logits are
        (1/n) Σ_i head_t(f_i(x)) over the n fine-tuned trunks f_i. It costs n trunk passes."""
        members = list(members or self.tasks)
        out = {}
        for t in tasks or self.tasks:
            logits = torch.stack([self.logits(t, self.trunk(m), split) for m in members]).mean(0)
            out[t] = float((logits.argmax(-1) == self.splits[t][split].y).float().mean())
        return out

    @torch.no_grad()
    def entropy(self, trunk: Mapping[str, torch.Tensor], split: str = "test",
                tasks: Sequence[str] | None = None) -> dict[str, float]:
        """task -> mean prediction entropy (nats) of (``trunk``, head_t) on the task's inputs (no labels used)."""
        out = {}
        for t in tasks or self.tasks:
            logp = torch.log_softmax(self.logits(t, trunk, split), -1)
            out[t] = float(-(logp.exp() * logp).sum(-1).mean())
        return out

    @torch.no_grad()
    def control_accuracy(self, trunk: Mapping[str, torch.Tensor], split: str = "test") -> float:
        """Accuracy of the backbone's *own* head on its pretraining task (``control_task``) with ``trunk``:
        the control of task negation (Ilharco et al. use ImageNet, CLIP's own task, the same way)."""
        from torch.func import functional_call

        data = self.control_data[split]
        logits = functional_call(self.backbone, dict(trunk), (data.x,))
        return float((logits.argmax(-1) == data.y).float().mean())

    def inputs(self, task: str, split: str = "test") -> torch.Tensor:
        """Task ``task``'s unlabelled inputs x [N, 1, 8, 8] (what AdaMerging adapts on)."""
        return self.splits[task][split].x


def probe_head(trunk: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 150,
               lr: float = 0.05, weight_decay: float = 1e-3, seed: int = 0) -> nn.Linear:
    """A linear probe on frozen features: full-batch AdamW on trunk(x) [N, d] -> y [N] (logistic regression)."""
    with torch.no_grad():
        feats = trunk(x.flatten(1))                                          # [N, d]
    gen = torch.Generator().manual_seed(int(seed))
    head = nn.Linear(feats.shape[1], n_classes)
    with torch.no_grad():
        bound = 1 / math.sqrt(feats.shape[1])
        head.weight.copy_(torch.empty(head.weight.shape).uniform_(-bound, bound, generator=gen))
        head.bias.zero_()
    head = head.to(feats.device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(feats), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()


SHIFTS = ("rot90", "rot180", "rot270", "fliplr", "flipud", "invert")


def task_split(split, task: str):
    """A task of the pool on ``split``: a name of ``lfmlab.data.digits.TASKS``, optionally with an input
    shift after a ``+`` (``"parity+rot90"``, ``"mod3+invert"``; shifts: :data:`SHIFTS`). Returns (split, n_classes)."""
    from lfmlab.data import digits as D

    name, _, shift = task.partition("+")
    out, n = D.relabel(split, name)
    if not shift:
        return out, n
    if shift.startswith("rot") and shift in SHIFTS:
        return D.rotated(out, int(shift[3:]) // 90), n
    if shift.startswith("flip") and shift in SHIFTS:
        return D.flipped(out, shift[4:]), n
    if shift == "invert":
        return D.inverted(out), n
    raise KeyError(f"unknown input shift {shift!r} in task {task!r}; shifts: {', '.join(SHIFTS)}")


def _finetune_trunk(model: nn.Module, split, epochs: int, lr: float, batch_size: int, weight_decay: float,
                    generator: torch.Generator, train_head: bool = False) -> None:
    """Fine-tune ``model.features`` in place (and the head if ``train_head``); AdamW, cosine schedule."""
    params = list(model.features.parameters()) + (list(model.head.parameters()) if train_head else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    batches = split.loader(batch_size, shuffle=True, generator=generator)
    total = max(epochs * len(batches), 1)
    sched = cosine(opt, total)
    model.train()
    model.head.requires_grad_(train_head)
    for _ in range(epochs):
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.head.requires_grad_(True)
    model.eval()


def finetune_tasks(backbone: nn.Module, tasks: Sequence[str] = DEFAULT_TASKS, epochs: int = 6,
                   lr: float = 3e-3, batch_size: int = 32, weight_decay: float = 0.1, probe_steps: int = 150,
                   train_head: bool = False, control_task: str = "digits0-4", seed: int = 0,
                   device: str | torch.device | None = None, progress: bool = True) -> TaskPool:
    """Probe, then fine-tune the trunk of ``backbone`` once per task (names as in :func:`task_split`).

    Fine-tuning: AdamW (``lr``, ``weight_decay``), cosine schedule, ``epochs`` over the task's
    train split; the probe head stays frozen unless ``train_head``. ``backbone`` (a digits model
    with ``.features`` and ``.head``, pretrained on ``control_task``) is not modified. ``seed``
    fixes the probe initialisation and the data order of every task (task i uses
    ``1000 * seed + i``). Returns a :class:`TaskPool`; nothing is cached on disk.
    """
    from lfmlab.data import digits as D
    from lfmlab.progress import progress as bar

    dev = runtime.device(device)
    start = time.perf_counter()
    data = D.load(dev)
    base = copy.deepcopy(backbone).to(dev).eval()
    pretrained = state_of(base)
    trunk_keys = merge_keys([pretrained], prefixes=["features."])
    finetuned, splits, n_classes, templates = {}, {}, {}, {}
    for i, task in enumerate(bar(list(tasks), desc="fine-tune tasks", disable=not progress)):
        s = 1000 * int(seed) + i
        parts = {name: task_split(split, task)[0] for name, split in data.splits().items()}
        n_classes[task] = task_split(data.val, task)[1]
        head_t = probe_head(base.features, parts["train"].x, parts["train"].y, n_classes[task],
                            steps=probe_steps, seed=s)
        template = copy.deepcopy(base)
        template.head = copy.deepcopy(head_t)
        template.n_classes = n_classes[task]
        template.requires_grad_(False)
        model = copy.deepcopy(template).requires_grad_(True)
        gen = torch.Generator(device=dev).manual_seed(s)
        _finetune_trunk(model, parts["train"], epochs, lr, batch_size, weight_decay, gen, train_head)
        if train_head:
            template.head.load_state_dict(model.head.state_dict())
        finetuned[task], splits[task], templates[task] = state_of(model), parts, template
    hyper = dict(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                 probe_steps=probe_steps, train_head=train_head, seed=seed)
    control_data = {name: task_split(split, control_task)[0] for name, split in data.splits().items()}
    return TaskPool(list(tasks), base, pretrained, finetuned, trunk_keys, splits, n_classes, templates,
                    time.perf_counter() - start, hyper, control_task, control_data)
