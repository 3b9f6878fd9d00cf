"""Learning-rate schedules, as multipliers of the optimiser's base rate (``LambdaLR``), per step."""
from __future__ import annotations

import math

import torch

__all__ = ["cosine", "warmup"]


def cosine(opt: torch.optim.Optimizer, total: int, warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay from 1 to 0 over ``total`` steps (Loshchilov and Hutter 2017, without restarts):
    m(s) = ½ (1 + cos(π · min(1, (s − w) / (total − w)))), under a linear warm-up (s + 1) / w
    over the first ``warmup`` = w steps when w > 0."""
    if total < 1 or warmup < 0:
        raise ValueError(f"need total ≥ 1 and warmup ≥ 0 steps, got total={total}, warmup={warmup}")

    def multiplier(s: int) -> float:
        ramp = (s + 1) / warmup if warmup > 0 else 1.0
        return min(ramp, 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total - warmup)))))

    return torch.optim.lr_scheduler.LambdaLR(opt, multiplier)


def warmup(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``steps`` steps, then the base rate: m(s) = min(1, (s + 1) / steps)."""
    steps = max(1, int(steps))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))
