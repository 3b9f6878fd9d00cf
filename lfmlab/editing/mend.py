"""MEND: Model Editor Networks with gradient decomposition (Mitchell, Lin, Bosselut, Finn,
Manning, ICLR 2022; survey §6.2.3).

Fine-tuning on one edit example moves a weight W along its gradient, which for a linear
layer is a sum of rank-one terms, one per token: ∇_W L = Σ_t u_t δ_tᵀ (u_t: the layer's input,
δ_t: the gradient at its output). That step alone generalises poorly and disturbs other facts.
MEND *learns* to transform the two factors with a small editor network g:

    (ũ_t, δ̃_t) = g(u_t, δ_t),      ΔW = -η Σ_t ũ_t δ̃_tᵀ

trained over many edits so that, after the edit, the model (a) gives the new object for an
*equivalent* phrasing x'_e of the edit (loss L_e = -log p_θ̃(y_e | x'_e)), and (b) keeps its
distribution on unrelated inputs x_loc (L_loc = KL(p_θ(·|x_loc) || p_θ̃(·|x_loc))):
L = c_edit · L_e + L_loc. Once trained, an edit costs one forward/backward pass of the
model and one pass of g: no optimisation loop at edit time.

g works in normalised coordinates, as in MEND: z = ([u; δ] - μ) / σ with μ, σ fixed from
a sample of edits (u and δ differ in scale by orders of magnitude), then MEND's block twice,
z <- z + W₂ ReLU(W₁ z), with W₂ = 0 at the start, so that an untrained MEND is one gradient
step in normalised coordinates; one editor and one learned step size η per edited layer.
The model is never changed: edits are returned as deltas.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lfmlab.core.hooks import capture
from lfmlab.core.lm import pair_batch
from lfmlab.core.params import device_of, frozen
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, World
from lfmlab.editing.base import EditResult, as_edit
from lfmlab.progress import progress
from lfmlab.zoo.layers import as_weight_layout, in_out_features, layers


@dataclass
class MendConfig:
    edit_layers: tuple[int, ...] = (0, 1)
    rank: int = 64               # hidden width of the editor's blocks
    steps: int = 600             # editor training steps
    batch: int = 8               # edits per step
    lr: float = 1e-3
    init_log_eta: float = -9.0   # η = exp(log η) ≈ 1e-4, learned per layer
    c_edit: float = 0.5
    seed: int = 0
    stats_examples: int = 64     # edits used to fix the input normalisation


class MendBlock(nn.Module):
    """z + W₂ ReLU(W₁ z); W₂ starts at zero so the block starts as the identity."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down, self.up = nn.Linear(dim, rank), nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.up(F.relu(self.down(z)))


class Editor(nn.Module):
    """One MEND editor for one weight of shape [in_dim, out_dim] (u ∈ R^in, δ ∈ R^out)."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, log_eta: float):
        super().__init__()
        self.in_dim = in_dim
        self.blocks = nn.ModuleList([MendBlock(in_dim + out_dim, rank) for _ in range(2)])
        self.log_eta = nn.Parameter(torch.tensor(log_eta))
        self.register_buffer("mu", torch.zeros(in_dim + out_dim))
        self.register_buffer("sigma", torch.ones(in_dim + out_dim))

    def forward(self, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """u [T, in], δ [T, out] -> ΔW [in, out] = -η Σ_t ũ_t δ̃_tᵀ."""
        z = (torch.cat([u, delta], -1) - self.mu) / self.sigma  # [T, in + out], normalised
        for block in self.blocks:
            z = block(z)
        u_t, d_t = z[:, :self.in_dim], z[:, self.in_dim:]
        return -self.log_eta.exp() * (u_t.T @ d_t)


def _factors(model, names: list[str], batch) -> tuple[dict, dict]:
    """The gradient factors of one edit example: inputs u [T, in] and output grads δ [T, out]."""
    weights = [model.get_submodule(n).weight for n in names]
    before = [w.requires_grad for w in weights]
    for w in weights:  # so that the layers' outputs are part of an autograd graph
        w.requires_grad_(True)
    try:
        with capture(model, names, inputs=True) as u_in, capture(model, names) as out:
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        grads = torch.autograd.grad(loss, [out[n] for n in names])
    finally:
        for w, b in zip(weights, before):
            w.requires_grad_(b)
    mask = batch.attention_mask[0].bool()
    return ({n: u_in[n][0][mask].detach() for n in names},
            {n: g[0][mask].detach() for n, g in zip(names, grads)})


class Mend(nn.Module):
    """A trained set of MEND editors for one model (use :func:`train`, then :meth:`edit`)."""

    def __init__(self, model: nn.Module, config: MendConfig):
        cfg = config
        super().__init__()
        layout = layers(model)
        self.cfg = cfg
        self.names = [layout.mlp_out_name(l) for l in cfg.edit_layers]
        dims = [in_out_features(model.get_submodule(n)) for n in self.names]
        self.editors = nn.ModuleList([Editor(i, o, cfg.rank, cfg.init_log_eta) for i, o in dims])
        self.history: list[float] = []

    def deltas(self, model: nn.Module, tokenizer: Tokenizer, prompt: str, target: str) -> dict[str, torch.Tensor]:
        """The weight deltas for one edit (differentiable w.r.t. the editors)."""
        device = device_of(model)
        batch = pair_batch(tokenizer, [prompt], [target], device)
        u, d = _factors(model, self.names, batch)
        return {f"{n}.weight": as_weight_layout(model.get_submodule(n), ed(u[n], d[n]))
                for n, ed in zip(self.names, self.editors)}

    def edit(self, model: nn.Module, tokenizer: Tokenizer, request: EditRequest) -> EditResult:
        """One edit in one pass: no optimisation loop. The model is unchanged on return."""
        request = as_edit(tokenizer, request)
        start = time.perf_counter()
        deltas = {n: t.detach() for n, t in self.deltas(model, tokenizer, request.prompt, request.target_new).items()}
        return EditResult(deltas, time.perf_counter() - start, {"layers": list(self.cfg.edit_layers)})


def _examples(world: World, rng: random.Random, n: int, exclude: set[str]):
    """Training edits from *train* facts and *train* templates only (held-out ones stay unseen):
    (edit prompt, equivalent prompt, new object, locality prompt + its object). The locality
    prompt asks the same relation of another subject half of the time: the neighbours that an
    edit is most likely to disturb (MEND's paper drew them from unrelated text)."""
    facts = [f for f in world.facts_of(split="train") if f.subject not in exclude]
    by_rel = {r: [f for f in facts if f.relation == r] for r in world.relations}
    out = []
    for _ in range(n):
        f = rng.choice(facts)
        t_edit, t_eq = rng.sample(world.templates[f.relation]["train"], 2)
        new = rng.choice([o for o in world.objects(f.relation) if o != f.object])
        pool = by_rel[f.relation] if rng.random() < 0.5 else facts
        loc = rng.choice(pool)
        while loc.subject == f.subject:
            loc = rng.choice(pool)
        out.append((world.prompt(f.subject, f.relation, t_edit), world.prompt(f.subject, f.relation, t_eq), new,
                    world.prompt(loc.subject, loc.relation, rng.randrange(4)), loc.object))
    return out


def train(model: nn.Module, tokenizer: Tokenizer, world: World, config: MendConfig | None = None,
          exclude_subjects: set[str] | None = None) -> Mend:
    """Train MEND's editors on edits of ``world``'s train facts (not of ``exclude_subjects``,
    e.g. the subjects the notebook evaluates on). The model is frozen throughout."""
    cfg = config or MendConfig()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = device_of(model)
    mend = Mend(model, cfg).to(device)
    exclude = exclude_subjects or set()
    params = dict(model.named_parameters())
    with frozen(model):
        # fix the editors' input normalisation from a sample of edits
        zs: dict[str, list[torch.Tensor]] = {n: [] for n in mend.names}
        for prompt, _, new, _, _ in _examples(world, rng, cfg.stats_examples, exclude):
            u, d = _factors(model, mend.names, pair_batch(tokenizer, [prompt], [new], device))
            for n in mend.names:
                zs[n].append(torch.cat([u[n], d[n]], -1))
        for n, ed in zip(mend.names, mend.editors):
            z = torch.cat(zs[n])
            ed.mu.copy_(z.mean(0))
            ed.sigma.copy_(z.std(0).clamp_min(1e-6))
        opt = torch.optim.Adam(mend.parameters(), lr=cfg.lr)
        for _ in progress(range(cfg.steps), desc="MEND editor training"):
            total = 0.0
            for prompt, eq, new, loc, loc_obj in _examples(world, rng, cfg.batch, exclude):
                deltas = mend.deltas(model, tokenizer, prompt, new)
                edited = {n: params[n] + d for n, d in deltas.items()}
                b_eq = pair_batch(tokenizer, [eq], [new], device)
                l_edit = functional_call(model, edited, args=(), kwargs=dict(
                    input_ids=b_eq.input_ids, attention_mask=b_eq.attention_mask, labels=b_eq.labels)).loss
                b_loc = pair_batch(tokenizer, [loc], [loc_obj], device)
                with torch.no_grad():
                    p_base = model(input_ids=b_loc.input_ids).logits.float().log_softmax(-1)
                p_new = (
                    functional_call(model, edited, args=(), kwargs=dict(input_ids=b_loc.input_ids))
                    .logits.float()
                    .log_softmax(-1)
                )
                l_loc = F.kl_div(p_new, p_base, log_target=True, reduction="none").sum(-1).mean()
                total = total + (cfg.c_edit * l_edit + l_loc) / cfg.batch
            opt.zero_grad()
            total.backward()
            opt.step()
            mend.history.append(round(total.item(), 4))
    return mend
