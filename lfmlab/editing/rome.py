"""ROME: Rank-One Model Editing (Meng, Bau, Andonian, Belinkov, NeurIPS 2022; survey §6.2.2).

Causal tracing says a fact (s, r, o) is recalled by an MLP at the subject's last token. ROME
reads that MLP's output projection W (keys k ∈ R^{4d} -> values v ∈ R^{d}) as a linear
associative memory, and rewrites the single association k* -> v*:

1. **key** k*: the input of W at the subject's last token, averaged over the bare prompt and
   N prompts that start with random text the model itself generated (so that k* stands for
   the subject, whatever comes before it);
2. **value** v* = v + δ: the output of W at that token is shifted by δ, optimised so that the
   model says o* after each of those prompts, while a KL term keeps the model's view of the
   subject's "essence" ("{subject} is a") unchanged, with weight decay and a norm clamp on δ;
3. **update**: the rank-one change of W that maps k* to v* while disturbing other keys least,
   given their uncentred covariance C = E[k kᵀ] over text like the pretraining corpus:

       W' = W + Λ (C⁻¹ k*)ᵀ,   Λ = (v* - W k) / ((C⁻¹ k*)ᵀ k)

   (k: the key of the bare prompt, as in the ROME code). C is estimated once per model and
   layer and cached (:mod:`lfmlab.editing.covariance`).

**Deviations from the ROME code** (also stated in notebook 07):

* the weight decay on δ is ``weight_decay · ‖δ‖² / ‖v‖²``; ROME's ``compute_v`` uses
  ``v_weight_decay · ‖δ‖ / ‖v‖²``;
* the essence KL compares next-token distributions at the *last* token of "{subject} is a";
  ROME's code reads them at the subject's last token of that prompt;
* ``anchor_same_subject`` (not in ROME) adds KL terms on the subject's other facts, taken from
  :meth:`lfmlab.data.world.World.anchor_prompts`: a template that no metric scores.

Every editor works on :func:`lfmlab.editing.base.as_edit`'s bare edit: the request's
paraphrase, neighbourhood and same-subject prompts never reach it.

GPT-2 stores W as a ``Conv1D`` weight of shape [in, out]; the update is written through
:func:`lfmlab.zoo.weight_in_out`, so GPT-NeoX and Llama (``nn.Linear``) work the same way.
The model is unchanged on return: :func:`edit` returns the weight delta.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.data import world
from lfmlab.data.world import EditRequest
from lfmlab.editing.base import Edit, EditResult, as_edit
from lfmlab.editing.covariance import key_covariance
from lfmlab.editing.trace import subject_span
from lfmlab.hooks import capture, evaluating, rewrite
from lfmlab.lm import encode_prompt, pair_batch
from lfmlab.zoo.layers import layers, weight_in_out


@dataclass
class RomeConfig:
    """ROME's hyper-parameters (names follow the ROME code; defaults tuned on world-lm)."""

    layer: int = 0                  # the layer causal tracing picks (world-lm's card: 0)
    n_prefixes: int = 10            # generated prefixes for k* and v* (plus the bare prompt)
    prefix_tokens: tuple[int, ...] = (5, 10)
    v_steps: int = 80
    v_lr: float = 0.5
    kl_weight: float = 0.0625       # the essence (KL) term
    weight_decay: float = 0.1       # on ||δ||² / ||v||² (0.3: paraphrase 0.80 -> 0.1: 0.89 on world-lm)
    clamp: float = 4.0              # ||δ|| <= clamp · ||v||
    essence: tuple[str, ...] = ("{subject} is a",)
    anchor_same_subject: bool = False  # also hold the subject's other facts (same-subject retention)
    anchor_weight: float = 1.0      # the weight of those anchors' KL terms
    seed: int = 0
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def random_prefixes(model: nn.Module, tokenizer, n: int, lengths: tuple[int, ...] = (5, 10),
                    seed: int = 0) -> list[str]:
    """Short texts sampled from the model itself (ROME's "context templates")."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    out = []
    for i in range(n):
        ids = [bos]
        for _ in range(lengths[i % len(lengths)]):
            seq = torch.tensor([ids], device=device)
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].float().cpu()
            nxt = int(torch.multinomial(logits.softmax(-1), 1, generator=gen))
            if nxt == tokenizer.eos_token_id:
                break
            ids.append(nxt)
        text = tokenizer.decode(ids[1:], skip_special_tokens=True).strip().replace("\n", " ")
        out.append(text if text.endswith(".") else text + ".")
    return out


def _positions(tokenizer, texts: list[str], subject: str, prompt_start: list[int]) -> torch.Tensor:
    """Index of the subject's last token in each text (the occurrence inside the prompt part)."""
    return torch.tensor([subject_span(tokenizer, t, subject, char_from=c)[1] - 1
                         for t, c in zip(texts, prompt_start)])


def _contexts(prefixes: list[str], prompt: str) -> tuple[list[str], list[int]]:
    texts = [prompt] + [f"{p} {prompt}" for p in prefixes]
    return texts, [0] + [len(p) + 1 for p in prefixes]


def compute_key(model, tokenizer, subject: str, prompt: str, prefixes: list[str], layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k*, k): W's input at the subject's last token averaged over contexts [4d], and for the bare prompt."""
    name = layers(model).mlp_out_name(layer)
    texts, starts = _contexts(prefixes, prompt)
    pos = _positions(tokenizer, texts, subject, starts)
    keys = []
    for text, p in zip(texts, pos):
        ids = torch.tensor([encode_prompt(tokenizer, text)], device=next(model.parameters()).device)
        with capture(model, [name], inputs=True) as seen, torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        keys.append(seen[name][0, p])
    keys = torch.stack(keys)  # [contexts, 4d]
    return keys.mean(0), keys[0]


def compute_value(model, tokenizer, request: Edit, prefixes: list[str], cfg: RomeConfig,
                  module: str | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(v*, v): the optimised output of ``module`` (default: W, the MLP output projection of
    ``cfg.layer``) at the subject's last token, and its original value [d]. MEMIT calls this
    with a block's name: the same optimisation on the residual stream."""
    request = as_edit(tokenizer, request)
    device = next(model.parameters()).device
    name = module or layers(model).mlp_out_name(cfg.layer)
    texts, starts = _contexts(prefixes, request.prompt)
    batch = pair_batch(tokenizer, texts, [request.target_new] * len(texts), device)
    pos = _positions(tokenizer, texts, request.subject, starts).to(device)
    kl_texts = [e.format(subject=request.subject) for e in cfg.essence]
    kl_w = [cfg.kl_weight] * len(kl_texts)
    if cfg.anchor_same_subject:  # the subject's other facts, under a template no metric scores
        anchors = world.load().anchor_prompts(request.subject, request.relation)
        kl_texts += anchors
        kl_w += [cfg.anchor_weight] * len(anchors)
    kl_w = torch.tensor(kl_w, device=device)
    kl_ids = [encode_prompt(tokenizer, t) for t in kl_texts]
    kl_len = torch.tensor([len(i) for i in kl_ids], device=device)
    kl_pos = _positions(tokenizer, kl_texts, request.subject, [0] * len(kl_texts)).to(device)
    # One right-padded batch: the n target rows, then the KL rows (one forward pass per step).
    n, width = batch.input_ids.shape
    width = max(width, int(kl_len.max()))
    ids = torch.zeros(n + len(kl_ids), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    t = batch.input_ids.shape[1]
    ids[:n, :t], mask[:n, :t] = batch.input_ids, batch.attention_mask
    for i, row in enumerate(kl_ids):
        ids[n + i, :len(row)], mask[n + i, :len(row)] = torch.tensor(row, device=device), 1
    at = torch.cat([pos, kl_pos])                                   # the subject's last token, every row
    rows = torch.arange(n + len(kl_ids), device=device)
    labels = batch.labels[:, 1:]
    is_t = labels != -100
    kl_rows, kl_last = rows[n:], kl_len - 1

    with torch.no_grad(), capture(model, [name]) as seen:
        logits = model(input_ids=ids, attention_mask=mask).logits
        v = seen[name][0, pos[0]].detach().clone()  # the value of the bare prompt [d]
        p_init = logits[kl_rows, kl_last].float().log_softmax(-1)

    delta = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.v_lr)
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)

    def add_delta(out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[rows, at] += delta
        return out

    history = []
    try:
        for step in range(cfg.v_steps):
            with rewrite(model, {name: add_delta}):
                logits = model(input_ids=ids, attention_mask=mask).logits
            logp = logits[:n, :t - 1].float().log_softmax(-1)
            logp = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            nll = -((logp * is_t).sum(1) / is_t.sum(1)).mean()
            p_now = logits[kl_rows, kl_last].float().log_softmax(-1)
            kl = (F.kl_div(p_init, p_now, log_target=True, reduction="none").sum(-1) * kl_w).sum() / len(cfg.essence)
            decay = delta.norm() ** 2 / v.norm() ** 2
            loss = nll + kl + cfg.weight_decay * decay
            history.append(round(loss.item(), 4))
            if nll.item() < 0.05:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # the clamp: ||δ|| <= clamp · ||v||
                limit = cfg.clamp * v.norm()
                if delta.norm() > limit:
                    delta.mul_(limit / delta.norm())
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return (v + delta).detach(), v, {"loss": history, "steps": len(history)}


def edit(model: nn.Module, tokenizer, request: EditRequest, cfg: RomeConfig | None = None,
         cov: torch.Tensor | None = None, prefixes: list[str] | None = None) -> EditResult:
    """One ROME edit. Returns the weight delta; the model is unchanged on return."""
    cfg = cfg or RomeConfig()
    request = as_edit(tokenizer, request)  # the edit only: no grading prompt reaches ROME
    start = time.perf_counter()
    layout = layers(model)
    name = layout.mlp_out_name(cfg.layer)
    module = model.get_submodule(name)
    W = weight_in_out(module)  # [4d, d]
    C = key_covariance(model, tokenizer, cfg.layer) if cov is None else cov
    prefixes = random_prefixes(model, tokenizer, cfg.n_prefixes, cfg.prefix_tokens, cfg.seed) if prefixes is None else prefixes
    with evaluating(model):
        k_star, k = compute_key(model, tokenizer, request.subject, request.prompt, prefixes, cfg.layer)
        v_star, v, info = compute_value(model, tokenizer, request, prefixes, cfg)
    with torch.no_grad():
        u = torch.linalg.solve(C.to(W.device, torch.float64), k_star.double()).to(W.dtype)  # C⁻¹ k*  [4d]
        u = u / u.norm()
        bias = getattr(module, "bias", None)
        current = k @ W + (bias if bias is not None else 0)  # W's output for the bare prompt's key
        right = (v_star - current) / (k @ u)  # Λ  [d]
        delta_in_out = torch.outer(u, right)  # [4d, d]
    delta = delta_in_out if type(module).__name__ == "Conv1D" else delta_in_out.T
    info.update(layer=cfg.layer, delta_norm=delta.norm().item(), prefixes=len(prefixes))
    return EditResult({f"{name}.weight": delta.detach()}, time.perf_counter() - start, info)
