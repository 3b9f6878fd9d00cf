"""Knowledge neurons (Dai, Dong, Hao, Sui, Chang, Wei, ACL 2022; survey §6.2.2).

1. **Attribution** (Dai et al., eq. 2-3): for a factual prompt, score every FFN neuron i of
   every layer l (the activations a entering the MLP output projection) by integrated gradients
   of p(object | prompt) as the neuron is scaled from 0 to its value (Riemann sum, m steps):

       Attr(a_i) = a_i · (1/m) Σ_{k=1..m} ∂p(α_k a) / ∂a_i,   α_k = k/m

2. **Locate**: keep neurons whose attribution exceeds ``threshold`` (0.2, the paper's t) x the
   largest one over all layers, and that do so for at least ``share`` of the prompts of the
   fact (the paper's refining step; with one prompt it keeps all); then drop neurons that are
   just as active for *unrelated* facts (``generic_prompts``, drawn by
   :meth:`lfmlab.data.world.World.generic_prompts` under a template no metric scores).
3. **Edit** (§5.1, "updating facts"): each found neuron writes its value vector w_i (its row of
   the output projection) into the residual stream. Move those vectors from the old object's
   embedding towards the new one's: w_i <- w_i - λ1 e(o) + λ2 e(o*), with the paper's
   λ1 = 1, λ2 = 8.

**Deviation from Dai et al. (stated in notebook 07).** The paper attributes at the [MASK]
position of BERT, i.e. the position that predicts the object; the GPT analogue is the last
token (``KNConfig(position="last")``). On world-lm that finds the *same* few layer-0 neurons
for every fact (they fire for every "... is" prompt), the generic filter removes them all, and
KN edits nothing on most requests. Causal tracing shows world-lm recalls a fact in the layer-0
MLP at the **subject's last token**, so the default here (``position="subject"``) attributes
p(object at the last token) to the neurons at the subject's last token, where each fact has
its own neurons. Attribution uses the first token of a multi-token object only; the paper's
objects are single tokens.

It is the simplest locate-and-edit method, and a weak editor (the anchor on GPT-2 XL
CounterFact is ~29% efficacy): the edit only adds embedding directions to value vectors, it
does not solve for the new answer. The model is unchanged on return.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from lfmlab.core.hooks import capture
from lfmlab.core.lm import encode_prompt, encode_target
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.data import world
from lfmlab.data.world import EditRequest
from lfmlab.editing.base import EditResult, as_edit
from lfmlab.editing.trace import subject_span
from lfmlab.zoo.layers import as_weight_layout, layers


@dataclass
class KNConfig:
    ig_steps: int = 20
    threshold: float = 0.2
    share: float = 0.7
    max_neurons: int = 20
    remove_scale: float = 1.0   # λ1 (Dai et al.: 1)
    add_scale: float = 8.0      # λ2 (Dai et al.: 8)
    position: str = "subject"   # "subject": the subject's last token (see above); "last": the paper's
    n_generic: int = 5          # unrelated facts whose neurons are not edited
    generic_seed: int = 0
    generic_share: float = 0.0  # a neuron is generic when active for > this share of them (0: any)

    def __post_init__(self):
        if self.position not in ("subject", "last"):
            raise ValueError(f"position must be 'subject' or 'last', not {self.position!r}")


def attribute(model: nn.Module, tokenizer: Tokenizer, prompt: str, target: str, steps: int = 20,
              position: int = -1) -> torch.Tensor:
    """Integrated-gradients attribution [L, 4d] of every FFN neuron at token ``position`` of the
    prompt (default: the last token, as in Dai et al.) for p(first token of ``target``) at the
    last token."""
    layout = layers(model)
    device = device_of(model)
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
    target_id = encode_target(tokenizer, target)[0]
    alphas = torch.arange(1, steps + 1, device=device, dtype=torch.float) / steps  # [m]
    batch = ids.expand(steps, -1)
    out = []
    for layer in range(layout.n_layers):
        name = layout.mlp_out_name(layer)
        with torch.no_grad(), capture(model, [name], inputs=True) as seen:
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        a = seen[name][0, position]  # [4d] the neuron activations at ``position``
        scaled = (alphas[:, None] * a).requires_grad_(True)  # [m, 4d]

        def pre(mod, args, scaled=scaled):
            x = args[0].clone()
            x[:, position] = scaled
            return (x, *args[1:])

        handle = model.get_submodule(name).register_forward_pre_hook(pre)
        try:
            probs = (
                model(input_ids=batch, attention_mask=torch.ones_like(batch))
                .logits[:, -1]
                .float()
                .softmax(-1)[:, target_id]
            )
            (grad,) = torch.autograd.grad(probs.sum(), scaled)
        finally:
            handle.remove()
        out.append(a * grad.mean(0))
    return torch.stack(out).detach()


def _position(tokenizer: Tokenizer, prompt: str, subject: str | None, cfg: KNConfig) -> int:
    if cfg.position == "last" or subject is None:
        return -1
    return subject_span(tokenizer, prompt, subject)[1] - 1


_CACHE: dict[tuple, tuple[set[tuple[int, int]], torch.Tensor]] = {}


def _active(model, tokenizer: Tokenizer, prompt: str, target: str, cfg: KNConfig,
            subject: str | None = None) -> tuple[set[tuple[int, int]], torch.Tensor]:
    # the same unrelated facts recur for every edit: remember their neurons for as long as the
    # weights are the same (a checksum of every parameter; edits are applied and then restored)
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    key = (id(model), checksum, prompt, target, subject,
           cfg.position, cfg.ig_steps, cfg.threshold)
    if key not in _CACHE:
        if len(_CACHE) > 512:
            _CACHE.clear()
        attr = attribute(model, tokenizer, prompt, target, cfg.ig_steps, _position(tokenizer, prompt, subject, cfg))
        _CACHE[key] = ({(l, i) for l, i in (attr > cfg.threshold * attr.max()).nonzero().tolist()}, attr)
    return _CACHE[key]


def locate(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], target: str, config: KNConfig,
           generic_prompts=(), subject: str | None = None) -> list[tuple[int, int]]:
    """The knowledge neurons (layer, index) of the fact ``prompts`` -> ``target`` (attributed at
    ``subject``'s last token unless ``cfg.position == "last"``), minus the neurons also active
    for the unrelated facts ``generic_prompts``: (prompt, subject, object) triples, or
    (prompt, object) pairs attributed at the last token."""
    cfg = config
    votes: dict[tuple[int, int], int] = {}
    score: dict[tuple[int, int], float] = {}
    for prompt in prompts:
        found, attr = _active(model, tokenizer, prompt, target, cfg, subject)
        for n in found:
            votes[n] = votes.get(n, 0) + 1
            score[n] = score.get(n, 0.0) + attr[n].item()
    hits: dict[tuple[int, int], int] = {}
    for g in generic_prompts:
        p, s, o = g if len(g) == 3 else (g[0], None, g[1])
        for n in _active(model, tokenizer, p, o, cfg, s)[0]:
            hits[n] = hits.get(n, 0) + 1
    generic = {n for n, h in hits.items() if h > cfg.generic_share * len(generic_prompts)}
    kept = [n for n, v in votes.items() if v >= cfg.share * len(prompts) and n not in generic]
    kept.sort(key=lambda n: (-votes[n], -score[n]))
    return kept[:cfg.max_neurons]


def edit(model: nn.Module, tokenizer: Tokenizer, request: EditRequest, config: KNConfig | None = None,
         prompts: list[str] | None = None, generic_prompts=None) -> EditResult:
    """Move the knowledge neurons' value vectors from e(true) to e(new). Returns the deltas.

    ``prompts``: phrasings of the fact to refine over (default: the edit prompt);
    ``generic_prompts``: unrelated facts whose neurons are not edited (default:
    ``cfg.n_generic`` train facts of other subjects drawn with ``cfg.generic_seed`` by
    :meth:`~lfmlab.data.world.World.generic_prompts`, under a template no metric scores)."""
    cfg = config or KNConfig()
    request = as_edit(tokenizer, request)  # the edit only: no grading prompt reaches KN
    start = time.perf_counter()
    layout = layers(model)
    if generic_prompts is None:
        generic_prompts = world.load().generic_prompts(cfg.n_generic, cfg.generic_seed, exclude={request.subject})
    neurons = locate(model, tokenizer, prompts or [request.prompt], request.target_true, cfg, generic_prompts,
                     subject=request.subject)
    emb = model.get_output_embeddings().weight.detach()
    shift = (cfg.add_scale * emb[encode_target(tokenizer, request.target_new)[0]]
             - cfg.remove_scale * emb[encode_target(tokenizer, request.target_true)[0]])  # [d]
    deltas: dict[str, torch.Tensor] = {}
    for layer, i in neurons:
        module = model.get_submodule(layout.mlp_out_name(layer))
        name = f"{layout.mlp_out_name(layer)}.weight"
        d = deltas.setdefault(name, torch.zeros_like(module.weight))
        as_weight_layout(module, d)[i] += shift  # d seen as [4d, d] (a view): row i is neuron i's value vector
    return EditResult(deltas, time.perf_counter() - start, {"neurons": neurons, "position": cfg.position})
