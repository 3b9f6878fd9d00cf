"""Task-embedding network: Wang et al., "Meta-Learning without Data via Wasserstein
Distributionally-Robust Model Fusion", UAI 2022 (survey §5.2, [174], eqs. 13-14).

A zoo of N models (same architecture), each trained on its own task T_i; their data is gone.
Every task gets a learned **embedding** e_i ∈ R^d and one network f_φ maps an embedding to a
whole set of weights. φ and the e_i are fitted so that f_φ(e_i) reproduces model i (eq. 13),
with the Gaussian likelihood of eq. 14 (σ a constant):

    max_{φ, e_1..e_N}  Σ_i log P(θ_i | f_φ(e_i)),     P(θ_i | f_φ(e_i)) = exp(−‖f_φ(e_i) − θ_i‖² / σ²)

i.e. least squares, min Σ_i ‖f_φ(e_i) − θ_i‖² / σ², over every weight of every model at once.
The zoo is then *fused* into one network: f_φ(e_i) regenerates model i, and other embeddings give
other weights on the surface that f_φ learned. The meta-initialisation for a new task is read
at the centre of the embeddings, θ* = f_φ(ē), ē = (1/N) Σ_i e_i.

The network here (:class:`TaskEmbeddingNet`):

    f_φ(e) = θ̄ + W₂ tanh(W₁ e + b₁) + b₂,     θ̄ = (1/N) Σ_i θ_i (the plain weight average)

with W₂ and b₂ starting at **zero**, so an unfitted network returns the plain weight average for
every embedding: eqs. 13-14 are what move it away from it (and the null method of the notebook's
claim is that unfitted network).

Simplifications (stated in notebook 06 too):

* The **Wasserstein distributionally-robust** part of Wang et al. (a meta-model robust to a shift
  of the task-embedding distribution, and to untrusted models in the zoo) is not implemented;
  the meta-initialisation is f_φ at the mean embedding. In lfmlab's probes (a zoo of 8 conv nets,
  seed 0) a robust centre found with a WRM-style penalty (Sinha et al. 2018) fine-tuned no
  better than the mean embedding (1-shot 0.206 and 0.200 against 0.214).
* f_φ is one hidden layer (``hidden`` tanh units) with the weight average as its output bias; the
  embeddings start as small random vectors; φ and e are fitted jointly with Adam for a fixed
  number of steps on the eq. 13-14 loss divided by the number of weights, its learning rate
  decayed linearly to zero (at a constant 10⁻² the loss spiked every hundred steps or so, and
  where it stopped decided the fit: relative error 0.002 or 0.025 on the same zoo, measured).
  The size and the steps were chosen on the relative error alone, a weight-space number: no
  image was looked at.
* σ only scales the objective (its minimiser does not depend on it); it is kept as a field so
  that :attr:`TENResult.log_likelihood` reports eq. 13's value.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from lfmlab import validate
from lfmlab.core import state
from lfmlab.meta.dfml import Zoo
from lfmlab.progress import progress

__all__ = ["TENConfig", "TENResult", "TaskEmbeddingNet", "fit", "flatten", "own_task_accuracy"]


@dataclass
class TENConfig:
    """``embed_dim`` d of each e_i; ``hidden`` tanh units of f_φ; ``steps`` Adam steps at ``lr`` on φ
    and the e_i jointly; ``sigma``: eq. 14's σ (scales the objective only)."""

    embed_dim: int = 4
    hidden: int = 32
    steps: int = 1000
    lr: float = 1e-2
    sigma: float = 1.0

    def __post_init__(self):
        for name, lo in (("embed_dim", 1), ("hidden", 1), ("steps", 0)):
            validate.number(name, getattr(self, name), lo, integer=True,
                            fix=f"TENConfig({name}=...) with a whole number ≥ {lo}")
        validate.number("lr", self.lr, 0, 10, lo_open=True, fix="a learning rate, e.g. TENConfig(lr=1e-2)")
        validate.number("sigma", self.sigma, 0, lo_open=True, fix="σ of eq. 14, e.g. TENConfig(sigma=1.0)")


def flatten(model: nn.Module) -> torch.Tensor:
    """Every floating-point weight of ``model`` in one vector (``state_dict`` order), detached."""
    sd = state.state_of(model)
    return state.flatten(sd, state.merge_keys([sd]))


class TaskEmbeddingNet(nn.Module):
    """f_φ: an embedding e [d] -> the weights of ``template``'s architecture (see the module docstring).

    ``embeddings`` [N, d] are the tasks' e_i (parameters, fitted with φ); ``mean`` [P] the zoo's
    weight average θ̄ (a buffer)."""

    def __init__(self, template: nn.Module, mean: torch.Tensor, n_tasks: int, config: TENConfig,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.template = copy.deepcopy(template).eval()
        for p in self.template.parameters():
            p.requires_grad_(False)
        self.like = state.state_of(self.template)
        self.keys = state.merge_keys([self.like])
        self.register_buffer("mean", mean.detach().clone())
        dev = mean.device
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        init = torch.randn(n_tasks, config.embed_dim, generator=generator, device=gen_dev)
        self.embeddings = nn.Parameter(0.1 * init.to(dev))
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator, device=gen_dev)))
            self.hidden = nn.Linear(config.embed_dim, config.hidden).to(dev)
        self.out = nn.Linear(config.hidden, mean.numel()).to(dev)
        nn.init.zeros_(self.out.weight)      # unfitted: f_φ(e) = θ̄ for every e
        nn.init.zeros_(self.out.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        """f_φ(e): e [..., d] -> weights [..., P]."""
        return self.mean + self.out(torch.tanh(self.hidden(e)))

    def from_vector(self, vector: torch.Tensor) -> nn.Module:
        """A new module (the template's architecture) holding the weight vector [P]."""
        weights = state.unflatten(vector.detach().to(self.mean.device), self.like, self.keys)
        net = state.with_state(self.template, {**self.like, **weights})
        for p in net.parameters():
            p.requires_grad_(True)
        return net

    def model(self, e: torch.Tensor) -> nn.Module:
        """A new module holding f_φ(e)."""
        return self.from_vector(self(e.to(self.mean.device)))

    def regenerate(self, i: int) -> nn.Module:
        """Model i of the zoo as f_φ(e_i)."""
        return self.model(self.embeddings[int(i)].detach())

    def centre(self) -> nn.Module:
        """The meta-initialisation θ* = f_φ(ē), ē the mean of the embeddings."""
        return self.model(self.embeddings.detach().mean(0))


@dataclass
class TENResult:
    """``network``: the fitted f_φ with its embeddings; ``losses`` [steps]: eq. 13-14's loss per
    weight; ``relative_error`` [N]: ‖f_φ(e_i) − θ_i‖ / ‖θ_i − θ̄‖ (1 for the unfitted network, 0
    for a perfect fit); ``log_likelihood``: eq. 13's Σ_i log P(θ_i | f_φ(e_i)) at the end."""

    network: TaskEmbeddingNet
    losses: torch.Tensor
    relative_error: torch.Tensor
    log_likelihood: float
    seconds: float
    config: TENConfig = field(default_factory=TENConfig)


def _zoo_vectors(models: Sequence[nn.Module]) -> torch.Tensor:
    """The zoo's weights θ_i as rows [N, P], after checking that they can be fused."""
    if len(models) < 2:
        raise ValueError(f"the task-embedding network fuses a zoo: give it at least 2 models, not {len(models)}")
    states = [state.state_of(m) for m in models]
    try:
        keys = state.merge_keys(states)
    except ValueError as err:
        raise ValueError(f"the zoo's models must share one architecture (f_φ predicts one weight layout): {err}") \
            from None
    thetas = torch.stack([state.flatten(sd, keys) for sd in states])
    validate.finite("the zoo's weights", thetas)
    return thetas


def fit(models: Sequence[nn.Module] | Zoo, config: TENConfig | None = None,
        generator: torch.Generator | None = None) -> TENResult:
    """Eqs. 13-14: fit f_φ and the task embeddings e_i to the zoo's weights θ_i (a :class:`Zoo` or a
    list of models of one architecture). The models are not changed."""
    cfg = config or TENConfig()
    models = models.models if isinstance(models, Zoo) else list(models)
    thetas = _zoo_vectors(models)
    mean = thetas.mean(0)
    net = TaskEmbeddingNet(models[0], mean, len(thetas), cfg, generator)
    params = [net.embeddings, *net.hidden.parameters(), *net.out.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / max(cfg.steps, 1))
    losses = torch.zeros(cfg.steps)
    start = time.perf_counter()
    for s in progress(range(cfg.steps), desc="task-embedding network"):
        loss = ((net(net.embeddings) - thetas) ** 2).sum(1).mean() / (cfg.sigma ** 2 * thetas.shape[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
        losses[s] = loss.detach()
    with torch.no_grad():
        fitted = net(net.embeddings)
        sq = ((fitted - thetas) ** 2).sum(1)
        rel = sq.sqrt() / (thetas - mean).norm(dim=1).clamp_min(1e-12)
        log_lik = float(-(sq / cfg.sigma ** 2).sum())
    return TENResult(net, losses, rel.cpu(), log_lik, time.perf_counter() - start, cfg)


def own_task_accuracy(zoo: Zoo, held_out: torch.Tensor, models: Sequence[nn.Module]) -> torch.Tensor:
    """Accuracy of ``models[i]`` on zoo task i's images in ``held_out`` [C, M', 1, 8, 8] (its own
    classes, labelled as the zoo model labels them), per image: [N, n_way * M'] of 0/1."""
    if len(models) != len(zoo):
        raise ValueError(f"one model per zoo task: got {len(models)} models for {len(zoo)} tasks")
    out = []
    with torch.no_grad():
        for i, net in enumerate(models):
            x = held_out[zoo.classes[i]].flatten(0, 1)
            y = torch.arange(zoo.n_way, device=x.device).repeat_interleave(held_out.shape[1])
            out.append((net(x).argmax(-1) == y).float())
    return torch.stack(out)
