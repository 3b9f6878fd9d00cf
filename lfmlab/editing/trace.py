"""Causal tracing: where does a model look a fact up? (Meng et al. 2022, the ROME paper;
survey §6.2.2, "locate and edit").

Three runs on a factual prompt such as "The capital of Peru is" -> " Lima":

1. **clean**: p(o), the probability of the object's first token;
2. **corrupted**: Gaussian noise (std ν, by default 3x the std of the token embeddings) is
   added to the subject's token embeddings, so the model no longer knows who is asked about
   and p(o) drops to p*;
3. **corrupted with restoration**: as 2, but one internal state, at token i and layer l, is
   set back to its clean value. The *indirect effect* IE(i, l) = p_restored(i, l) - p*
   says how much of the fact flows through that state.

Restoring a block's output ("hidden") shows the whole residual stream; restoring only the
MLP or the attention output at (i, l) separates the two. For a GPT-style model, a strong MLP
effect at the subject's last token in early layers marks where ROME should edit.

All restorations of one kind run as one batched forward pass (rows = noise samples x (token,
layer) pairs), chunked to bound memory. The model is unchanged on return.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lfmlab.core.hooks import capture, rewrite
from lfmlab.core.lm import encode_prompt, encode_target
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.zoo.layers import Layout, layers

KINDS = ("hidden", "mlp", "attn")


def _name(layout: Layout, kind: str, layer: int) -> str:
    return {"hidden": layout.block_name, "mlp": layout.mlp_name, "attn": layout.attn_name}[kind](layer)


def subject_span(tokenizer: Tokenizer, prompt: str, subject: str, char_from: int = 0) -> tuple[int, int]:
    """Token positions [start, end) of ``subject`` in the encoded ``prompt``: its first
    occurrence at or after character ``char_from`` (use it to skip a prefix)."""
    if not subject or subject not in prompt[char_from:]:
        raise ValueError(f"The subject {subject!r} does not occur in the prompt {prompt!r}.")
    c0 = prompt.rstrip().index(subject, char_from)
    c1 = c0 + len(subject)
    enc = tokenizer(prompt.rstrip(), return_offsets_mapping=True)
    special = set(getattr(tokenizer, "all_special_ids", []))
    hits = [i for i, ((s, e), tid) in enumerate(zip(enc["offset_mapping"], enc["input_ids"]))
            if e > s and s < c1 and e > c0 and tid not in special]
    if not hits:
        raise ValueError(f"Could not map the subject {subject!r} to tokens of {prompt!r}.")
    return hits[0], hits[-1] + 1


def noise_level(model, factor: float = 3.0) -> float:
    """ν = factor x the standard deviation of the token-embedding entries."""
    return factor * model.get_input_embeddings().weight.detach().float().std().item()


@dataclass
class TraceResult:
    """p_restored tables [T, L] per kind; ``effect(kind)`` gives the indirect effect IE."""

    tokens: list[str]
    subject: tuple[int, int]
    target: str
    p_clean: float
    p_corrupt: float
    tables: dict[str, torch.Tensor] = field(default_factory=dict)

    def effect(self, kind: str = "mlp") -> torch.Tensor:
        return self.tables[kind] - self.p_corrupt

    @property
    def subject_last(self) -> int:
        return self.subject[1] - 1


@torch.no_grad()
def trace(model, tokenizer: Tokenizer, prompt: str, subject: str, target: str, samples: int = 10,
          noise: float | None = None, kinds: tuple[str, ...] = KINDS, window: int = 1,
          seed: int = 0, chunk_rows: int = 512) -> TraceResult:
    """Causal trace of ``prompt`` -> ``target`` with ``subject`` corrupted. See the module doc.

    ``window``: restore ``window`` consecutive layers centred on l (ROME used 10 of 48 layers
    in GPT-2 XL for MLP/attention; 1 suits a 6-layer model).
    """
    layout = layers(model)
    device = device_of(model)
    ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)  # [1, T]
    T, L = ids.shape[1], layout.n_layers
    s0, s1 = subject_span(tokenizer, prompt, subject)
    target_id = encode_target(tokenizer, target)[0]
    nu = noise_level(model) if noise is None else noise
    gen = torch.Generator().manual_seed(seed)
    eps = (torch.randn(samples, s1 - s0, layout.hidden, generator=gen) * nu).to(device)

    names = [_name(layout, k, l) for k in kinds for l in range(L)]
    with capture(model, names) as clean:
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits
    p_clean = logits[0, -1].float().softmax(-1)[target_id].item()

    # configuration c = 0 restores nothing; c = 1 + l * T + i restores (token i, layer l)
    n_conf = 1 + L * T
    conf_tok = torch.tensor([-1] + [i for l in range(L) for i in range(T)], device=device)
    conf_lay = torch.tensor([-1] + [l for l in range(L) for _ in range(T)], device=device)
    lo, hi = window // 2, (window - 1) // 2

    tables = {}
    for kind in kinds:
        probs = torch.empty(n_conf * samples, device=device)
        for r0 in range(0, n_conf * samples, chunk_rows):
            rows = torch.arange(r0, min(r0 + chunk_rows, n_conf * samples), device=device)
            conf, sample = rows // samples, rows % samples  # row -> (configuration, noise sample)
            tok, lay = conf_tok[conf], conf_lay[conf]

            def corrupt(emb, sample=sample):
                emb = emb.clone()
                emb[:, s0:s1] += eps[sample]
                return emb

            def restore_at(layer):
                hit = ((lay >= 0) & (layer >= lay - lo) & (layer <= lay + hi)).nonzero().squeeze(-1)
                clean_out = clean[_name(layout, kind, layer)][0]  # [T, D]

                def fn(out, hit=hit):
                    if len(hit):
                        out = out.clone()
                        out[hit, tok[hit]] = clean_out[tok[hit]]
                    return out
                return fn

            edits = {layout.embed_name: corrupt}
            edits.update({_name(layout, kind, l): restore_at(l) for l in range(L)})
            with rewrite(model, edits):
                batch = ids.expand(len(rows), T)
                out = model(input_ids=batch, attention_mask=torch.ones_like(batch), logits_to_keep=1).logits[:, -1]
            probs[rows] = out.float().softmax(-1)[:, target_id]
        mean = probs.view(n_conf, samples).mean(1)
        p_corrupt = mean[0].item()
        tables[kind] = mean[1:].view(L, T).T.cpu()  # [T, L]
    tokens = [tokenizer.decode([int(t)]) for t in ids[0]]
    return TraceResult(tokens, (s0, s1), target, p_clean, p_corrupt, tables)


@torch.no_grad()
def profile(model, tokenizer: Tokenizer, cases: list[tuple[str, str, str]], samples: int = 10,
            kinds: tuple[str, ...] = KINDS, seed: int = 0) -> dict:
    """Average indirect effect per layer at the subject's last token and at the last token,
    over ``cases`` = [(prompt, subject, target), ...] that the model gets right.

    Returns {kind: {"subject_last": [L], "last": [L]}, "p_clean": x, "p_corrupt": y,
    "n": number of cases, "best_mlp_layer": argmax of the MLP effect at the subject's last token}.
    """
    sums: dict[str, dict[str, torch.Tensor]] = {}
    p_clean = p_corrupt = 0.0
    for k, (prompt, subject, target) in enumerate(cases):
        res = trace(model, tokenizer, prompt, subject, target, samples=samples, kinds=kinds, seed=seed + k)
        p_clean += res.p_clean
        p_corrupt += res.p_corrupt
        for kind in kinds:
            eff = res.effect(kind)
            acc = sums.setdefault(kind, {"subject_last": 0, "last": 0})
            acc["subject_last"] = acc["subject_last"] + eff[res.subject_last]
            acc["last"] = acc["last"] + eff[-1]
    n = max(1, len(cases))
    out: dict = {kind: {pos: [round(v / n, 4) for v in t.tolist()] for pos, t in d.items()}
                 for kind, d in sums.items()}
    out.update(p_clean=round(p_clean / n, 4), p_corrupt=round(p_corrupt / n, 4), n=len(cases))
    if "mlp" in out:
        out["best_mlp_layer"] = int(torch.tensor(out["mlp"]["subject_last"]).argmax())
    return out


def record_profile(folder, n: int = 60, samples: int = 10):
    """Put world-lm's causal-tracing profile on its card (``folder/card.json``): the average indirect
    effect per layer of restoring the MLP / attention / hidden state at the subject's last token,
    over ``n`` train facts it recalls. It picks the layer that locate-and-edit methods should edit.
    Run after ``python -m lfmlab.zoo train world-lm`` as ``python -m lfmlab.editing.trace FOLDER``."""
    import random
    import time
    from pathlib import Path

    from transformers import AutoTokenizer, GPT2LMHeadModel

    from lfmlab.core.lm import exact_match
    from lfmlab.data import world as world_data
    from lfmlab.zoo.card import ModelCard, record

    folder = Path(folder)
    card = ModelCard.read(folder)
    w = world_data.load()
    model, tok = GPT2LMHeadModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    facts = w.facts_of(split="train")
    random.Random(0).shuffle(facts)
    cases = []
    for f in facts:
        prompt = w.prompt(f.subject, f.relation)
        if exact_match(model, tok, [prompt], [f.object]) == 1.0:
            cases.append((prompt, f.subject, f.object))
        if len(cases) == n:
            break
    start = time.perf_counter()
    card.notes["causal_trace"] = {**profile(model, tok, cases, samples=samples),
                                  "seconds": round(time.perf_counter() - start, 1),
                                  "how": f"{n} recalled train facts, template 0, {samples} noise samples, "
                                         "noise 3x embedding std, window 1"}
    files = [p.name for p in folder.iterdir() if p.name != "card.json"]
    print(f"causal trace: best MLP layer {card.notes['causal_trace']['best_mlp_layer']}")
    return record(folder, card, files)


if __name__ == "__main__":
    import sys

    import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before the work)

    if len(sys.argv) != 2:
        sys.exit("usage: python -m lfmlab.editing.trace FOLDER   (a world-lm folder with card.json)")
    print(record_profile(sys.argv[1]))
