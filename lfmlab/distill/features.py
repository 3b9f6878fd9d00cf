"""Feature-based and relational distillation: FitNets hints (Romero et al., "FitNets: Hints for
thin deep nets", ICLR 2015) and relational KD (Park, Kim, Lu & Cho, "Relational Knowledge
Distillation", CVPR 2019); survey §3 (what the student learns from the teacher besides its logits).

Logit KD (:mod:`lfmlab.distill.kd`) transfers only the teacher's output distribution. Two more
things can be transferred:

* **FitNets: a hint.** The student's intermediate features at a *guided* layer, mapped by a small
  learned regressor r (a 1×1 convolution, since the two widths differ), should equal the teacher's
  features at its *hint* layer (eq. 3 of the paper):

  $$L_{HT} = \\tfrac12 \\lVert u_h(x) - r(v_g(x)) \\rVert^2 .$$

* **RKD: relations.** Instead of each example's features, match the *structure* between examples
  of a batch, in the penultimate embeddings t_i (teacher) and s_i (student), with the Huber loss
  l_δ (δ = 1). Distance-wise (eq. 4–5), normalised by the batch's mean distance μ:

  $$ψ_D(t_i, t_j) = \\frac{1}{μ}\\lVert t_i - t_j \\rVert_2, \\qquad
    L_{RKD-D} = \\sum_{i,j} l_δ\\big(ψ_D(t_i, t_j), ψ_D(s_i, s_j)\\big);$$

  angle-wise (eq. 6–7), the cosine of the angle at t_j in every triplet:

  $$ψ_A(t_i, t_j, t_k) = \\Big\\langle \\frac{t_i - t_j}{\\lVert t_i - t_j\\rVert},
    \\frac{t_k - t_j}{\\lVert t_k - t_j\\rVert} \\Big\\rangle, \\qquad
    L_{RKD-A} = \\sum_{i,j,k} l_δ\\big(ψ_A(t_i,t_j,t_k), ψ_A(s_i,s_j,s_k)\\big).$$

  RKD needs no regressor: distances and angles do not depend on the embedding's width.

The student's loss is α L_KD + β L_HT + γ_D L_RKD-D + γ_A L_RKD-A (+ (1 − α) CE with labels).

Simplifications: FitNets trains in two stages (the hint first, up to the guided layer, then KD);
here both terms are trained jointly from the start, as most re-implementations do. The Huber
sums of RKD are means over pairs / triplets (the paper's λ weights absorb the scale).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.params import device_of, frozen, trainable_copy
from lfmlab.core.schedules import cosine
from lfmlab.distill.common import DistillResult, Evaluator, kd_loss
from lfmlab.progress import progress

__all__ = ["FeatureKDConfig", "hint_loss", "rkd_distance", "rkd_angle", "feature_kd"]


@dataclass
class FeatureKDConfig:
    """The student's training (AdamW, cosine to 0) and the weight of each term."""

    steps: int = 600
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0     # τ of the logit term
    alpha: float = 1.0           # logit KD; 1 − α goes to CE when there are labels
    hint: float = 0.0            # β, FitNets' hint term
    rkd_distance: float = 0.0    # γ_D (the paper: 25)
    rkd_angle: float = 0.0       # γ_A (the paper: 50)
    eval_every: int = 50

    def check(self) -> "FeatureKDConfig":
        from lfmlab import validate

        for name in ("alpha", "hint", "rkd_distance", "rkd_angle"):
            validate.number(name, getattr(self, name), 0.0, fix=f"{name} is a loss weight: 0 switches it off.")
        validate.number("alpha", self.alpha, 0.0, 1.0, fix="α weighs KD against CE, in [0, 1].")
        validate.number("temperature", self.temperature, 0.0, lo_open=True, fix="τ > 0, e.g. 4.")
        return self


def hint_loss(teacher_feat: torch.Tensor, student_feat: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    """½ ‖u_h − r(v_g)‖², averaged over the batch (summed over channels and positions)."""
    return 0.5 * (teacher_feat - regressor(student_feat)).pow(2).flatten(1).sum(1).mean()


def _psi_d(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)                                                  # [B, B]
    off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    return d / d[off].mean().clamp_min(1e-8), off


def rkd_distance(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """L_RKD-D between teacher and student embeddings t [B, D_t], s [B, D_s] (widths may differ)."""
    pt, off = _psi_d(t.detach())
    ps, _ = _psi_d(s)
    return F.smooth_l1_loss(ps[off], pt[off])


def _psi_a(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)            # [j, i, D]: (e_i − e_j) / ‖·‖
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()                 # cos at e_j of (i, j, k)


def rkd_angle(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """L_RKD-A between embeddings t [B, D_t] and s [B, D_s]: O(B³) triplets, so keep B modest."""
    return F.smooth_l1_loss(_psi_a(s), _psi_a(t.detach()))


class _Tap:
    """Record one module's output on every forward pass."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.value = output

    def close(self) -> None:
        self.handle.remove()


def _layer(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        raise KeyError(f"no module {name!r} in {type(model).__name__}; e.g. {', '.join(list(modules)[1:6])}")
    return modules[name]


def feature_kd(teacher: nn.Module, student: nn.Module, x: torch.Tensor, config: FeatureKDConfig | None = None,
               test: tuple[torch.Tensor, torch.Tensor] | None = None, labels: torch.Tensor | None = None,
               hint_layer: str = "features.7", guided_layer: str = "features.7", embedding: str = "features",
               generator: torch.Generator | None = None, method: str | None = None, show: bool = True
               ) -> DistillResult:
    """Train a copy of ``student`` on the pool of images x [M, 1, 8, 8] with logit KD plus the hint
    and relational terms of ``config`` (each off at weight 0).

    ``hint_layer``/``guided_layer``: the teacher's and the student's modules whose outputs the hint
    compares (default: the max-pool after the second block of a DigitsCNN, [B, c2, 4, 4]);
    ``embedding``: the module whose output is the embedding RKD relates (default: ``features``,
    the pooled penultimate features). The regressor is trained with the student and dropped.
    ``history``: each active term per step. The teacher and the given student are unchanged.
    """
    cfg = (config or FeatureKDConfig()).check()
    dev = device_of(teacher)
    s = trainable_copy(student, dev)
    x = x.to(dev)
    labels = None if labels is None else labels.to(dev)
    taps_t = {"hint": _Tap(_layer(teacher, hint_layer)), "emb": _Tap(_layer(teacher, embedding))}
    taps_s = {"hint": _Tap(_layer(s, guided_layer)), "emb": _Tap(_layer(s, embedding))}
    try:
        with frozen(teacher), torch.no_grad():
            t_logits, t_hint, t_emb = [], [], []
            for i in range(0, len(x), 1024):
                t_logits.append(teacher(x[i:i + 1024]))
                t_hint.append(taps_t["hint"].value)
                t_emb.append(taps_t["emb"].value)
            t_logits, t_hint, t_emb = torch.cat(t_logits), torch.cat(t_hint), torch.cat(t_emb)
            s(x[:2])
            c_s, c_t = taps_s["hint"].value.shape[1], t_hint.shape[1]
        regressor = nn.Conv2d(c_s, c_t, 1).to(dev)
        params = list(s.parameters()) + (list(regressor.parameters()) if cfg.hint > 0 else [])
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = cosine(opt, max(cfg.steps, 1))
        ev = Evaluator(test, cfg.eval_every, None)
        names = ("kd", "hint", "rkd distance", "rkd angle", "ce")
        history = {n: torch.zeros(cfg.steps, device=dev) for n in names}
        order, pos = None, 0
        start = time.perf_counter()
        for step in progress(range(cfg.steps), desc=method or "feature KD", disable=not show):
            if order is None or pos + cfg.batch_size > len(x):
                order, pos = torch.randperm(len(x), generator=generator).to(dev), 0
            rows = order[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
            out = s(x[rows])
            terms = {}
            if cfg.alpha > 0:
                terms["kd"] = cfg.alpha * kd_loss(out, t_logits[rows], cfg.temperature)
            if labels is not None and cfg.alpha < 1:
                terms["ce"] = (1 - cfg.alpha) * F.cross_entropy(out, labels[rows])
            if cfg.hint > 0:
                terms["hint"] = cfg.hint * hint_loss(t_hint[rows], taps_s["hint"].value, regressor)
            if cfg.rkd_distance > 0:
                terms["rkd distance"] = cfg.rkd_distance * rkd_distance(t_emb[rows], taps_s["emb"].value)
            if cfg.rkd_angle > 0:
                terms["rkd angle"] = cfg.rkd_angle * rkd_angle(t_emb[rows], taps_s["emb"].value)
            loss = sum(terms.values()) if terms else out.sum() * 0.0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for n, v in terms.items():
                history[n][step] = v.detach()
            ev(step + 1, s, x[rows])
        ev(cfg.steps, s, None, last=True)
        seconds = time.perf_counter() - start
    finally:
        for tap in (*taps_t.values(), *taps_s.values()):
            tap.close()
    s.eval()
    steps, acc = ev.curve()
    hyper = f"hint {cfg.hint:g}, RKD-D {cfg.rkd_distance:g}, RKD-A {cfg.rkd_angle:g}"
    return DistillResult(method or f"feature KD ({hyper})", s, ev.final, steps, acc, images=x[:100].cpu(),
                         labels=t_logits[:100].argmax(-1).cpu(), train_seconds=seconds,
                         history={n: h.cpu() for n, h in history.items() if bool(h.abs().sum() > 0)})
