"""WiSE-FT: robust fine-tuning by weight-space ensembling (Wortsman et al. 2022; survey §2.1.1).

Fine-tuning makes a model good at the new task and often worse elsewhere: here, the tuned
world-lm answers questions but forgets part of how to complete statements. WiSE-FT interpolates
the *weights* of the zero-shot (pretrained) model θ_0 and the fine-tuned model θ_1 (paper eq. 1):

    θ_α = (1 − α) · θ_0 + α · θ_1,      α ∈ [0, 1].

One model, no extra inference cost. Sweeping α traces a curve between the two models; the
paper's finding is that intermediate α keep most of the fine-tuned accuracy on the target
distribution while recovering robustness under distribution shift. Both models must share an
architecture (full fine-tuning, BitFit, or a merged LoRA: :func:`lfmlab.tuning.lora.merge_and_unload`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from lfmlab.core.state import interpolate

__all__ = ["wise_ft", "WiseCurve", "alpha_curve"]


def wise_ft(zero_shot: nn.Module, fine_tuned: nn.Module, alpha: float = 0.5) -> nn.Module:
    """A new model with weights θ_α (the two inputs are unchanged)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    new = copy.deepcopy(zero_shot)
    new.load_state_dict(interpolate(zero_shot.state_dict(), fine_tuned.state_dict(), alpha))
    return new.eval()


@dataclass
class WiseCurve:
    """Scores of θ_α along the α sweep: ``scores[name][i]`` at ``alphas[i]``."""

    alphas: list[float]
    scores: dict[str, list[float]]

    def at(self, alpha: float) -> dict[str, float]:
        i = min(range(len(self.alphas)), key=lambda j: abs(self.alphas[j] - alpha))
        return {k: v[i] for k, v in self.scores.items()}

    def best(self, name: str) -> float:
        """The α with the highest score on ``name``."""
        vals = self.scores[name]
        return self.alphas[max(range(len(vals)), key=vals.__getitem__)]


@torch.no_grad()
def alpha_curve(zero_shot: nn.Module, fine_tuned: nn.Module, alphas: Sequence[float],
                evals: Mapping[str, Callable[[nn.Module], float]]) -> WiseCurve:
    """Evaluate θ_α for each α with every ``evals[name](model) -> score``.

    One working copy is re-loaded in place for each α (the inputs are never changed).
    """
    work = copy.deepcopy(zero_shot).eval()
    t0 = {k: v.detach().clone() for k, v in zero_shot.state_dict().items()}
    t1 = {k: v.detach().clone() for k, v in fine_tuned.state_dict().items()}
    scores: dict[str, list[float]] = {name: [] for name in evals}
    for a in alphas:
        work.load_state_dict(interpolate(t0, t1, a))
        for name, fn in evals.items():
            scores[name].append(float(fn(work)))
    return WiseCurve([float(a) for a in alphas], scores)
