"""SERAC: Semi-parametric Editing with a Retrieval-Augmented Counterfactual model (Mitchell,
Lin, Bosselut, Manning, Finn, ICML 2022; survey §6.1, memory-based editing).

The base model's weights are never touched. Edits are kept in an explicit **memory**; a
**scope classifier** decides whether an input is about one of the stored edits; if it is,
a **counterfactual model** answers with that edit in view, otherwise the base model answers
as before (eq. 15's I(x_e) / O(x_e) split, made explicit):

    f(x) = counterfactual(x, e*)  if max_e p(in scope | x, e) > τ   (e* the best edit)
           base(x)                otherwise

Here the scope classifier is a logistic regression on MiniLM sentence embeddings of the input
and the edit prompt ([u·v, |u-v|, cos]), trained on world facts: same fact in another phrasing
= in scope; another subject or another relation = out of scope. The counterfactual model is a
copy of the base LM fine-tuned to read an edit descriptor and then answer a question about it
("The capital of Peru is Quito. In Peru, the capital city is" -> "Quito"). Without that
training world-lm trusts its memory over a contradicting context: it was pretrained to copy
facts about places it does not know, never to overrule what it knows.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.lm import encode_prompt
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, World
from lfmlab.editing.base import Edit, as_edit, read_after
from lfmlab.progress import progress
from lfmlab.zoo.minilm import embed


class ScopeClassifier(nn.Module):
    """p(x is in the scope of edit e) from sentence embeddings u (of x) and v (of e's prompt)."""

    def __init__(self, dim: int = 384):
        super().__init__()
        self.linear = nn.Linear(2 * dim + 1, 1)

    def forward(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([u * v, (u - v).abs(), (u * v).sum(-1, keepdim=True)], -1)
        return self.linear(feats).squeeze(-1)  # logits [N]


@dataclass
class ScopeReport:
    accuracy: float
    in_scope_recall: float
    out_scope_specificity: float
    n_train: int


def train_scope(encoder, world: World, n_facts: int = 400, steps: int = 300, seed: int = 0,
                exclude_subjects: set[str] | None = None) -> tuple[ScopeClassifier, ScopeReport]:
    """Train the scope classifier on pairs of train-template prompts of ``n_facts`` train facts:
    (same fact, other template) = 1; (same relation, other subject), (same subject, other
    relation) = 0. Only train templates 1 and up are used: the held-out templates and template 0
    (the neighbourhood and same-subject prompts') grade the editor; ``exclude_subjects`` neither."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    exclude = exclude_subjects or set()
    facts = [f for f in world.facts_of(split="train") if f.subject not in exclude]
    chosen = rng.sample(facts, min(n_facts, len(facts)))
    by_rel = {r: [f for f in facts if f.relation == r] for r in world.relations}
    pairs = []
    for f in chosen:
        a, b = rng.sample(world.templates[f.relation]["train"][world.UNSCORED_TEMPLATE:], 2)
        other_subject = rng.choice([g for g in by_rel[f.relation] if g.subject != f.subject])
        other_relation = [g for g in world.about(f.subject) if g.relation != f.relation and g.split == "train"]
        pairs.append((world.prompt(f.subject, f.relation, a), world.prompt(f.subject, f.relation, b), 1.0))
        pairs.append((world.prompt(f.subject, f.relation, a), world.prompt(other_subject.subject, f.relation, b), 0.0))
        if other_relation:
            g = rng.choice(other_relation)
            pairs.append(
                (world.prompt(f.subject, f.relation, a), world.prompt(g.subject, g.relation, rng.randrange(
                    world.UNSCORED_TEMPLATE, len(world.templates[g.relation]["train"]))), 0.0)
            )
    model, tok = encoder.model, encoder.tokenizer
    texts = sorted({t for p in pairs for t in p[:2]})
    vec = dict(zip(texts, embed(model, tok, texts)))
    u = torch.stack([vec[p[0]] for p in pairs])
    v = torch.stack([vec[p[1]] for p in pairs])
    y = torch.tensor([p[2] for p in pairs], device=u.device)
    clf = ScopeClassifier(u.shape[1]).to(u.device)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(clf(u, v), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = clf(u, v) > 0
    pos, neg = y == 1, y == 0
    report = ScopeReport((pred == pos).float().mean().item(), pred[pos].float().mean().item(),
                         (~pred[neg]).float().mean().item(), len(pairs))
    return clf.eval(), report


def train_counterfactual(model: nn.Module, tokenizer: Tokenizer, world: World, steps: int = 300, batch: int = 16,
                         lr: float = 1e-3, seed: int = 0, exclude_subjects: set[str] | None = None) -> nn.Module:
    """A fine-tuned *copy* of ``model`` that answers from an edit descriptor in its context:
    "<prompt_a> <new>. <prompt_b>" -> "<new>", where a and b are two train templates (1 and up: never
    a graded one) of the same train fact and <new> another object of its relation. The base model
    is not changed."""
    import copy

    from lfmlab.core.lm import pair_batch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    exclude = exclude_subjects or set()
    facts = [f for f in world.facts_of(split="train") if f.subject not in exclude]
    cf = copy.deepcopy(model).train()
    device = device_of(cf)
    opt = torch.optim.AdamW(cf.parameters(), lr=lr, weight_decay=0.0)
    for _ in progress(range(steps), desc="SERAC counterfactual model"):
        prompts, targets = [], []
        for f in rng.sample(facts, batch):
            a, b = rng.sample(world.templates[f.relation]["train"][world.UNSCORED_TEMPLATE:], 2)
            new = rng.choice([o for o in world.objects(f.relation) if o != f.object])
            prompts.append(f"{world.prompt(f.subject, f.relation, a)} {new}. {world.prompt(f.subject, f.relation, b)}")
            targets.append(new)
        bt = pair_batch(tokenizer, prompts, targets, device)
        loss = cf(input_ids=bt.input_ids, attention_mask=bt.attention_mask, labels=bt.labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return cf.eval()


class Serac(nn.Module):
    """``base`` wrapped with an edit memory. Use like the base model; ``add``/``clear`` edits.

    ``needs_prompt_len``: routing depends on the prompt only, so scorers pass ``prompt_len``
    (where each row's answer starts) to ``forward``.
    """

    memory_fields = ("memory", "_keys")   # what the edits add (arena footprint)

    needs_prompt_len = True

    def __init__(self, base: nn.Module, tokenizer: Tokenizer, encoder, classifier: ScopeClassifier,
                 counterfactual: nn.Module, threshold: float = 0.5):
        super().__init__()
        self.base, self.tokenizer, self.encoder = base, tokenizer, encoder
        self.counterfactual = counterfactual
        self.classifier, self.threshold = classifier, threshold
        self.memory: list[Edit] = []
        self._keys: list[torch.Tensor] = []
        self.config = base.config

    def add(self, request: EditRequest) -> None:
        request = as_edit(self.tokenizer, request)
        self.memory.append(request)
        self._keys.append(embed(self.encoder.model, self.encoder.tokenizer, [request.prompt])[0])

    def clear(self) -> None:
        self.memory.clear()
        self._keys.clear()

    def scope(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(best edit index [N], its in-scope probability [N]); probability 0 when memory is empty."""
        if not self.memory:
            return torch.zeros(len(prompts), dtype=torch.long), torch.zeros(len(prompts))
        u = embed(self.encoder.model, self.encoder.tokenizer, prompts)  # [N, D]
        keys = torch.stack(self._keys).to(u.device)  # [M, D]
        with torch.no_grad():
            logits = self.classifier(u[:, None].expand(-1, len(keys), -1), keys[None].expand(len(u), -1, -1))
        prob, best = logits.sigmoid().max(-1)
        return best.cpu(), prob.cpu()

    def descriptor(self, request: Edit) -> str:
        return f"{request.prompt} {request.target_new}."

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                prompt_len: torch.Tensor | None = None, **kwargs):
        logits = self.base(input_ids=input_ids, attention_mask=attention_mask).logits
        if not self.memory:
            return SimpleNamespace(logits=logits)
        if prompt_len is None:  # no hint: treat the whole row as the prompt
            prompt_len = (
                attention_mask.sum(-1)
                if attention_mask is not None
                else torch.full((len(input_ids),), input_ids.shape[1])
            )
        prompts = [self.tokenizer.decode(input_ids[i, :int(prompt_len[i])], skip_special_tokens=True).strip()
                   for i in range(len(input_ids))]
        best, prob = self.scope(prompts)
        contexts = [encode_prompt(self.tokenizer, self.descriptor(self.memory[int(best[i])]))
                    if prob[i] > self.threshold else None for i in range(len(input_ids))]
        logits = read_after(self.counterfactual, self.tokenizer, contexts, input_ids, attention_mask, logits)
        return SimpleNamespace(logits=logits)
