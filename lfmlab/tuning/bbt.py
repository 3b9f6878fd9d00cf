"""Black-box tuning, BBT (Sun et al. 2022; survey §2.2.1, black-box prompt tuning).

The model is a service: we may send it inputs and read its output scores, nothing else. No
gradients, no parameters. BBT still learns a continuous soft prompt p [n, d] for it:

1. **a low-dimensional search space.** p = p_0 + A z, with z ∈ R^k (k ≈ 10-100, far below
   n·d) and A [n·d, k] a *fixed random projection* (BBTv2's normal A with std σ_e/√k, σ_e the
   standard deviation of the word embeddings, so that A z moves p by about one embedding's
   scale). Random subspaces of that size suffice because large models have a low intrinsic
   dimension (Aghajanyan et al. 2021);
2. **a derivative-free optimiser.** CMA-ES (the ``cma`` package) keeps a Gaussian over z;
   each generation it proposes a population of λ candidates z_1..z_λ, we return their losses,
   and it moves its mean and covariance towards the better ones;
3. **the loss** is the cross-entropy of the target answers under each candidate's prompt, on a
   fixed small training set, computed from the model's output scores only.

The baseline BBT must beat is **random search at equal budget** (:func:`random_search`): the
same subspace (p_0, A), the same training examples, the same number of candidate evaluations
and model calls, but every candidate drawn afresh from N(0, σ_0² I) and the best one kept.
CMA-ES's first generation *is* such a random draw; what it adds is the adaptation of the
Gaussian from one generation to the next.

Simplified here (Sun et al. 2022 use a 1024-dimensional RoBERTa/GPT-2 embedding, k = 500 and
8,000 API calls, and BBTv2 adds deep prompts in every layer): a small k, population and budget,
the soft prompt only at the input, and the loss is the answer cross-entropy (no verbaliser).

Speed: the population is scored in **batched forward passes** (:func:`population_losses`). The
soft prompt comes first and attends to nothing after it, so its keys and values are computed once
per candidate and shared by that candidate's B examples (a key/value cache), instead of once per
example; the examples are sorted by length and scored in groups of 8, each group cut to the
positions it needs, against a few candidates at once (about 64 rows a call: on a CPU larger calls
are slower, their activations no longer fit in the cache); and the LM head is applied at the
answer positions only. ``batched=False`` scores candidates one full call each (the reference, for
the benchmark). Every model call is counted (the prompt-only passes apart, see
:class:`CallCounter`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core import lm
from lfmlab.core.params import count, frozen_copy
from lfmlab.tuning.prompt import SoftPrompt, SoftPromptLM, init_prompt
from lfmlab.tuning.tasks import row_losses
from lfmlab.tuning.train import TuneResult

__all__ = ["CallCounter", "Projection", "population_losses", "bbt", "random_search", "prompt_at"]


class CallCounter:
    """Counts forward calls of a model and the rows (sequences) they scored.

    A pass given no attention mask that asks for a key/value cache only encodes soft prompts for
    later calls to read (:func:`population_losses`): it scores no sequence, and it is counted in
    ``prefix_calls``, not in ``calls`` or ``rows``."""

    def __init__(self, model: nn.Module):
        self.calls, self.rows, self.prefix_calls = 0, 0, 0
        body = getattr(model, "base_model", model)  # every call, with or without the LM head, runs the body once
        self._handle = body.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if kwargs.get("attention_mask") is None and kwargs.get("use_cache"):
            self.prefix_calls += 1
            return
        x = next((v for v in (kwargs.get("inputs_embeds"), kwargs.get("input_ids"), args[0] if args else None)
                  if v is not None), None)
        self.calls += 1
        self.rows += int(x.shape[0]) if x is not None else 0

    def close(self) -> None:
        self._handle.remove()


@dataclass
class Projection:
    """p = p_0 + A z: the fixed random map from the search space R^k to soft prompts [n, d]."""

    p0: torch.Tensor  # [n, d]
    A: torch.Tensor   # [n * d, k]

    @classmethod
    def random(cls, p0: torch.Tensor, k: int, embed_std: float, seed: int = 0) -> "Projection":
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(p0.numel(), k, generator=g) * (embed_std / k ** 0.5)
        return cls(p0, A.to(p0.device, p0.dtype))

    @property
    def k(self) -> int:
        return self.A.shape[1]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z [λ, k] -> prompts [λ, n, d]."""
        return self.p0 + (z.to(self.A) @ self.A.T).view(-1, *self.p0.shape)


@torch.no_grad()
def population_losses(model: SoftPromptLM, prompts: torch.Tensor, batch, batched: bool = True,
                      rows: int = 64, group: int = 8) -> torch.Tensor:
    """Mean target loss of each candidate prompt [λ] on a PairBatch of B examples.

    ``batched``: for ``rows // group`` candidates at a time, one prompt-only pass gives each
    prompt's keys and values; then each group of ``group`` examples (sorted by length, cut to the
    last position a label needs) is scored against all of them in one call of up to ``rows`` rows,
    reading the prompt from that cache, with the LM head at the answer positions only. The same
    numbers as a full forward pass per row (tested), for the examples' tokens only.
    ``batched=False``: one full call per candidate (the reference).
    """
    lam, B = prompts.shape[0], batch.input_ids.shape[0]
    if rows < 1 or group < 1:
        raise ValueError(f"rows and group must be >= 1, got rows={rows}, group={group}")
    if not batched:
        return torch.stack([row_losses(model(batch.input_ids, batch.attention_mask, prompt=p).logits,
                                       batch.labels).mean() for p in prompts])
    from transformers import DynamicCache

    labels = batch.labels[:, 1:]                  # position t predicts token t + 1
    answer = labels != -100
    positions = torch.arange(1, labels.shape[1] + 1, device=labels.device)
    need = (answer * positions).amax(1)           # input positions each example needs
    order = need.argsort(stable=True)
    groups = [order[i:i + group] for i in range(0, B, group)]
    per = max(1, rows // min(group, B))           # candidates per call
    body, head = model.base.base_model, model.base.get_output_embeddings()
    key = lm.cache_kwarg(body)
    emb = model.base.get_input_embeddings()(batch.input_ids)                  # [B, T, d]
    total = torch.zeros(lam, B, device=labels.device)
    for i in range(0, lam, per):
        P = prompts[i:i + per].to(emb.dtype)
        c, n = P.shape[:2]
        kv = [(layer.keys, layer.values) for layer in lm.output_cache(body(inputs_embeds=P, use_cache=True)).layers]
        for G in groups:
            L, m = int(need[G].max()), len(G)
            if L == 0:
                continue
            cache = DynamicCache([(k.repeat_interleave(m, 0), v.repeat_interleave(m, 0)) for k, v in kv])
            mask = batch.attention_mask[G, :L]
            mask = torch.cat([mask.new_ones(c * m, n), mask.repeat(c, 1)], 1)
            h = body(inputs_embeds=emb[G, :L].repeat(c, 1, 1), attention_mask=mask, use_cache=False,
                     **{key: cache}).last_hidden_state                      # [c·m, L, d]
            r, t = answer[G, :L].nonzero(as_tuple=True)
            h = h.view(c, m, L, -1)[:, r, t]                                # [c, answer tokens, d]
            nll = F.cross_entropy(head(h).float().transpose(1, 2), labels[G][r, t].expand(c, -1),
                                  reduction="none")                         # [c, answer tokens]
            total[i:i + c].index_add_(1, G[r], nll)
    return (total / answer.sum(1).clamp_min(1)).mean(1)


def _setup(model: nn.Module, data, n_tokens: int, k: int, examples: int, seed: int):
    """The frozen prompt model, the projection (p_0, A) and the fixed training batch of a search."""
    pm = SoftPromptLM(frozen_copy(model), SoftPrompt(init_prompt(model, n_tokens, "vocab", seed=seed)), n_tokens)
    pm.eval()
    table = pm.base.get_input_embeddings().weight
    proj = Projection.random(pm.source.weight.detach().clone(), k, float(table.std()), seed)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(data), generator=g)[:examples]
    return pm, proj, rows, data.rows(rows)


def _finish(name: str, model: nn.Module, pm: SoftPromptLM, proj: Projection, z_best: torch.Tensor, k: int,
            curve: list[float], seconds: float, info: dict) -> TuneResult:
    with torch.no_grad():
        pm.source.weight.copy_(proj(z_best[None])[0])
    for p in pm.parameters():
        p.requires_grad_(False)
    return TuneResult(name, pm, k, count(model), curve, seconds, info)


def prompt_at(result: TuneResult, z: torch.Tensor | None = None) -> SoftPromptLM:
    """The prompt model of a BBT or random-search result with the prompt p_0 + A z (``z=None``:
    z = 0, the initial prompt p_0). Shares the frozen base model with ``result.model``."""
    proj: Projection = result.info["projection"]
    z = torch.zeros(proj.k) if z is None else torch.as_tensor(z, dtype=torch.float32)
    pm = result.model
    with torch.no_grad():
        P = proj(z[None])[0].clone()
    return SoftPromptLM(pm.base, SoftPrompt(P).requires_grad_(False), pm.n_tokens).eval()


def bbt(model: nn.Module, data, n_tokens: int = 5, k: int = 20, popsize: int = 16, generations: int = 30,
        sigma0: float = 1.0, examples: int = 32, seed: int = 0, batched: bool = True,
        callback=None) -> TuneResult:
    """Black-box tuning of a soft prompt for a frozen copy of ``model`` with CMA-ES over z ∈ R^k.

    ``data``: an :class:`~lfmlab.tuning.tasks.LMData`; its first ``examples`` rows (after a
    seeded shuffle) are the fixed training set every candidate is scored on. The budget is
    ``popsize x generations`` candidate evaluations. ``result.info`` holds the loss of the
    initial prompt p_0, the best loss and population mean per generation, the number of model
    calls and scored sequences, and the final z. ``callback(generation, best_loss)`` is called
    after each generation. No parameter has a gradient at any point.
    """
    import cma

    if min(n_tokens, k, popsize, generations, examples) < 1:
        raise ValueError("n_tokens, k, popsize, generations and examples must all be >= 1")
    pm, proj, rows, batch = _setup(model, data, n_tokens, k, examples, seed)
    es = cma.CMAEvolutionStrategy(np.zeros(k), sigma0, {"popsize": popsize, "seed": seed + 1, "verbose": -9})
    counter = CallCounter(pm.base)
    best_curve, mean_curve = [], []
    start = time.perf_counter()
    try:
        with torch.no_grad():
            initial = float(population_losses(pm, proj.p0[None], batch)[0])
            counter.calls, counter.rows = 0, 0  # count the search itself
            for gen in range(generations):
                Z = np.asarray(es.ask())                                          # [λ, k]
                losses = population_losses(pm, proj(torch.as_tensor(Z, dtype=torch.float32)), batch, batched)
                values = losses.double().cpu().numpy()                            # one sync per generation
                es.tell(list(Z), values.tolist())
                best_curve.append(float(min(es.result.fbest, values.min())))
                mean_curve.append(float(values.mean()))
                if callback is not None:
                    callback(gen + 1, best_curve[-1])
    finally:
        counter.close()
    seconds = time.perf_counter() - start
    z_best = torch.as_tensor(np.asarray(es.result.xbest), dtype=torch.float32)
    return _finish(f"BBT (k={k}, λ={popsize})", model, pm, proj, z_best, k, best_curve, seconds,
                   {"initial_loss": initial, "best_loss": best_curve[-1], "mean_losses": mean_curve,
                    "calls": counter.calls, "sequences": counter.rows, "evaluations": popsize * generations,
                    "k": k, "z": z_best, "projection": proj, "batched": batched, "examples": rows.tolist()})


def random_search(model: nn.Module, data, n_tokens: int = 5, k: int = 20, popsize: int = 16, generations: int = 30,
                  sigma0: float = 1.0, examples: int = 32, seed: int = 0, batched: bool = True,
                  callback=None) -> TuneResult:
    """Random search at BBT's budget: the baseline (and null method) of :func:`bbt`.

    Same arguments, same subspace p_0 + A z, same training examples, same number of candidate
    evaluations (``popsize x generations``) and model calls (each generation's population in
    the same batched calls), but each candidate is z ~ N(0, σ_0² I), drawn independently, and the best one
    is kept: no distribution is adapted. ``result.info`` has the same keys as BBT's.
    """
    if min(n_tokens, k, popsize, generations, examples) < 1:
        raise ValueError("n_tokens, k, popsize, generations and examples must all be >= 1")
    pm, proj, rows, batch = _setup(model, data, n_tokens, k, examples, seed)
    g = torch.Generator().manual_seed(seed + 1)
    counter = CallCounter(pm.base)
    best_curve, mean_curve = [], []
    best, z_best = float("inf"), torch.zeros(k)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            initial = float(population_losses(pm, proj.p0[None], batch)[0])
            counter.calls, counter.rows = 0, 0
            for gen in range(generations):
                Z = sigma0 * torch.randn(popsize, k, generator=g)                   # [λ, k]
                values = population_losses(pm, proj(Z), batch, batched).double().cpu()
                i = int(values.argmin())
                if float(values[i]) < best:
                    best, z_best = float(values[i]), Z[i].clone()
                best_curve.append(best)
                mean_curve.append(float(values.mean()))
                if callback is not None:
                    callback(gen + 1, best)
    finally:
        counter.close()
    seconds = time.perf_counter() - start
    return _finish(f"random search (k={k}, {popsize}/call)", model, pm, proj, z_best, k, best_curve, seconds,
                   {"initial_loss": initial, "best_loss": best, "mean_losses": mean_curve,
                    "calls": counter.calls, "sequences": counter.rows, "evaluations": popsize * generations,
                    "k": k, "z": z_best, "projection": proj, "batched": batched, "examples": rows.tolist()})
