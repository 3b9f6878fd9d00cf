"""Exercises of notebook 02 (model tuning): LoRA on GPT-2's Conv1D layout, and its merge."""
from __future__ import annotations

import torch

from lfmlab.exercises.core import Exercise

SECTION = "02"


def _layer(weight, bias, A, B, alpha):
    from transformers.pytorch_utils import Conv1D

    from lfmlab.zoo.lora import LoRALinear

    d_in, d_out = weight.shape
    conv = Conv1D(d_out, d_in)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    layer = LoRALinear(conv, rank=A.shape[0], alpha=alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


@torch.no_grad()
def lora_forward_reference(x, weight, bias, A, B, alpha):
    return _layer(weight, bias, A, B, alpha)(x)


@torch.no_grad()
def lora_merge_reference(weight, A, B, alpha):
    layer = _layer(weight, torch.zeros(weight.shape[1]), A, B, alpha)
    layer.merge()
    return layer.base.weight.detach().clone()


def _cases(with_x: bool):
    for seed, (d_in, d_out, r, alpha) in enumerate([(5, 5, 3, 6.0), (6, 4, 2, 8.0), (8, 3, 1, 2.0),
                                                    (7, 7, 4, 16.0)]):
        g = torch.Generator().manual_seed(seed)
        case = dict(weight=torch.randn(d_in, d_out, generator=g), A=torch.randn(r, d_in, generator=g),
                    B=torch.randn(d_out, r, generator=g), alpha=alpha)
        if with_x:
            case = dict(x=torch.randn(2, 3, d_in, generator=g), bias=torch.randn(d_out, generator=g), **case)
        yield case


LORA_FORWARD = Exercise(
    name="lora_forward", section=SECTION, title="LoRA's forward pass on a GPT-2 layer", difficulty=1,
    minutes=10,
    equation=r"h = x W_0 + b + \frac{\alpha}{r}\, x A^\top B^\top"
             r"\qquad (W_0 \in \mathbb{R}^{d_{in}\times d_{out}} \text{ as GPT-2's Conv1D stores it})",
    stub='''def lora_forward(x, weight, bias, A, B, alpha):
    """LoRA (Hu et al. 2022, eq. 3) on a GPT-2 Conv1D layer.

    x [..., d_in]; weight [d_in, d_out] (Conv1D's layout: the layer computes x @ weight + bias);
    bias [d_out]; A [r, d_in]; B [d_out, r]; alpha: the LoRA scale α. Returns [..., d_out]:
    the frozen layer plus the low-rank path, scaled by α / r.
    """
''',
    body='''    r = A.shape[0]
    return x @ weight + bias + (alpha / r) * (x @ A.T @ B.T)
''',
    hints=("The frozen part is x @ weight + bias. The low-rank path first maps x down to r "
           "numbers with A, then up to d_out with B.",
           "r is A.shape[0]; the path is (alpha / r) * (x @ A.T @ B.T)."),
    reference=lora_forward_reference, cases=lambda: _cases(True),
    mistakes={
        "the low-rank path is scaled by α; LoRA scales it by α / r (r = A.shape[0])":
            lambda x, weight, bias, A, B, alpha: x @ weight + bias + alpha * (x @ A.T @ B.T),
        "the weight is used as [d_out, d_in] (x @ weight.T); GPT-2's Conv1D stores it as [d_in, d_out], "
        "so the layer computes x @ weight + bias":
            lambda x, weight, bias, A, B, alpha: x @ weight.T + bias + alpha / A.shape[0] * (x @ A.T @ B.T),
        "the bias is missing: the frozen layer is x @ weight + bias":
            lambda x, weight, bias, A, B, alpha: x @ weight + alpha / A.shape[0] * (x @ A.T @ B.T),
    },
    on_error="Check the layouts: GPT-2's Conv1D weight is [d_in, d_out] (x @ weight), A is "
             "[r, d_in] and B is [d_out, r].",
)

LORA_MERGE = Exercise(
    name="lora_merge", section=SECTION, title="Merge LoRA into a GPT-2 weight", difficulty=2, minutes=10,
    equation=r"W = W_0 + \Big(\frac{\alpha}{r} B A\Big)^\top \quad\text{(Conv1D layout } [d_{in}, d_{out}])",
    stub='''def lora_merge(weight, A, B, alpha):
    """The merged Conv1D weight [d_in, d_out]: after it, x @ merged + bias equals lora_forward.

    weight [d_in, d_out]; A [r, d_in]; B [d_out, r]. ΔW = (α / r) B A is [d_out, d_in]
    (nn.Linear's layout); Conv1D needs the transpose.
    """
''',
    body='''    return weight + (alpha / A.shape[0]) * (B @ A).T
''',
    hints=("Compute ΔW = (alpha / r) * (B @ A): its shape is [d_out, d_in].",
           "Conv1D's weight is [d_in, d_out], so add ΔW.T: weight + (alpha / r) * (B @ A).T."),
    reference=lora_merge_reference, cases=lambda: _cases(False),
    mistakes={
        "ΔW = (α/r) B A is [d_out, d_in]; GPT-2's Conv1D weight is [d_in, d_out]: add its transpose":
            lambda weight, A, B, alpha: weight + alpha / A.shape[0] * (B @ A),
        "the update is scaled by α; LoRA scales it by α / r (r = A.shape[0])":
            lambda weight, A, B, alpha: weight + alpha * (B @ A).T,
        "that is ΔW alone; the merged weight is W₀ + ΔWᵀ":
            lambda weight, A, B, alpha: alpha / A.shape[0] * (B @ A).T,
    },
    on_error="ΔW = (α/r) B A is [d_out, d_in]; the Conv1D weight is [d_in, d_out].",
)

@torch.no_grad()
def dora_merge_reference(weight, A, B, magnitude, alpha):
    from transformers.pytorch_utils import Conv1D

    from lfmlab.tuning.dora import DoRALinear

    d_in, d_out = weight.shape
    conv = Conv1D(d_out, d_in)
    conv.weight.copy_(weight)
    layer = DoRALinear(conv, rank=A.shape[0], alpha=alpha)
    layer.lora_A.copy_(A)
    layer.lora_B.copy_(B)
    layer.magnitude.copy_(magnitude)
    layer.merge()
    return conv.weight.detach().clone()


def _dora_cases():
    for case in _cases(False):
        g = torch.Generator().manual_seed(int(case["alpha"]))
        yield dict(case, magnitude=torch.rand(case["weight"].shape[1], generator=g) + 0.5)


def _dora_wrong(weight, A, B, magnitude, alpha, dim=1, scale=True):
    w = weight.T + alpha / A.shape[0] * (B @ A)                   # [out, in]
    if scale:
        w = magnitude[:, None] * w / w.norm(dim=dim, keepdim=True)
    return w.T


DORA_MERGE = Exercise(
    name="dora_merge", section=SECTION, title="DoRA: magnitude times direction, merged", difficulty=3,
    minutes=15,
    equation=r"W' = m \odot \frac{W_0 + \frac{\alpha}{r} B A}{\big\| W_0 + \frac{\alpha}{r} B A \big\|_c}"
             r"\quad (\|\cdot\|_c\text{: the norm of each output unit's weights})",
    stub='''def dora_merge(weight, A, B, magnitude, alpha):
    """DoRA's merged weight (Liu et al. 2024, eq. 5) for a GPT-2 Conv1D layer.

    weight [d_in, d_out] (Conv1D's layout); A [r, d_in]; B [d_out, r]; magnitude m [d_out]. In
    nn.Linear's layout [d_out, d_in], V = W₀ + (α / r) B A; each output unit's row of V is rescaled
    to length m: W' = m ⊙ V / ‖V‖ (norm over d_in, one per output unit). Returns W' as
    [d_in, d_out], Conv1D's layout.
    """
''',
    body='''    v = weight.T + (alpha / A.shape[0]) * (B @ A)                # [d_out, d_in]
    v = magnitude[:, None] * v / v.norm(dim=1, keepdim=True)     # each output unit to length m
    return v.T
''',
    hints=("Work in [d_out, d_in]: V = weight.T + (alpha / r) * (B @ A).",
           "v.norm(dim=1, keepdim=True) is one length per output unit; multiply by magnitude[:, None], "
           "divide, and transpose back."),
    reference=dora_merge_reference, cases=_dora_cases,
    mistakes={
        "the norm runs over the wrong dimension: DoRA normalises each output unit's weights (norm over "
        "d_in, one value per output unit, the length of magnitude)":
            lambda **kw: _dora_wrong(**kw, dim=0),
        "that is the LoRA merge: DoRA then rescales each output unit's weights to length m":
            lambda **kw: _dora_wrong(**kw, scale=False),
        "the result is in nn.Linear's layout [d_out, d_in]; return it as Conv1D's [d_in, d_out]":
            lambda **kw: _dora_wrong(**kw).T,
    },
    on_error="Shapes: weight.T, B @ A and the result in [d_out, d_in] until the last transpose.",
)

def dora_forward_reference(x, weight, bias, A, B, magnitude, alpha):
    from torch.func import functional_call
    from transformers.pytorch_utils import Conv1D

    from lfmlab.tuning.dora import DoRALinear

    d_in, d_out = weight.shape
    layer = DoRALinear(Conv1D(d_out, d_in), rank=A.shape[0], alpha=alpha)
    tensors = {"base.weight": weight, "base.bias": bias, "lora_A": A, "lora_B": B, "magnitude": magnitude}
    return functional_call(layer, tensors, (x,))


def _dora_forward_cases():
    for case in _cases(True):
        g = torch.Generator().manual_seed(int(case["alpha"]) + 1)
        case["B"] = case["B"] * 0.3
        yield dict(case, magnitude=torch.rand(case["weight"].shape[1], generator=g) + 0.5)


def _dora_forward_wrong(x, weight, bias, A, B, magnitude, alpha, detach=True, dim=1, rescale=True):
    v = weight.T + alpha / A.shape[0] * (B @ A)                         # [out, in]
    norm = v.norm(dim=dim, keepdim=True)
    norm = norm.detach() if detach else norm
    w = magnitude[:, None] * v / norm if rescale else v
    return x @ w.T + bias


DORA_FORWARD = Exercise(
    name="dora_forward", section=SECTION, title="DoRA's forward pass, and what its backward sees",
    difficulty=3, minutes=15,
    equation=r"h = x\, \Big(m \odot \frac{V}{\mathrm{sg}(\|V\|_c)}\Big)^\top + b,\quad "
             r"V = W_0 + \frac{\alpha}{r} B A",
    stub='''def dora_forward(x, weight, bias, A, B, magnitude, alpha):
    """DoRA's layer (Liu et al. 2024, eq. 5) on a GPT-2 Conv1D weight, for training.

    x [..., d_in]; weight [d_in, d_out] (Conv1D's layout); bias [d_out]; A [r, d_in]; B [d_out, r];
    magnitude m [d_out]. With V = W₀ + (α / r) B A in [d_out, d_in], the layer uses m ⊙ V / ‖V‖_c
    (the norm of each output unit's row). The norm is treated as a constant in the backward pass
    (paper §4.3: it saves memory and changes the values nothing). Returns [..., d_out].
    """
''',
    body='''    v = weight.T + (alpha / A.shape[0]) * (B @ A)                 # [d_out, d_in]
    norm = v.norm(dim=1, keepdim=True).detach()                   # a constant for the backward pass
    return x @ (magnitude[:, None] * v / norm).T + bias
''',
    hints=("The values are those of the merged weight of the previous exercise, applied to x, plus "
           "the bias.",
           "Compute the row norms of V with .detach(): the gradient then flows through V and m but "
           "not through ‖V‖."),
    reference=dora_forward_reference, cases=_dora_forward_cases, grad_of=("A", "B", "magnitude"),
    mistakes={
        "the values are right, the gradients are not: a missing detach. DoRA treats ‖V‖_c as a "
        "constant in the backward pass (norm.detach())":
            lambda **kw: _dora_forward_wrong(**kw, detach=False),
        "the norm runs over the wrong dimension: one norm per output unit (over d_in)":
            lambda **kw: _dora_forward_wrong(**kw, dim=0),
        "that is LoRA: DoRA rescales each output unit's weights to length m":
            lambda **kw: _dora_forward_wrong(**kw, rescale=False),
    },
)

EXERCISES = [LORA_FORWARD, LORA_MERGE, DORA_MERGE, DORA_FORWARD]
