"""GRACE: General Retrieval Adaptors for Continual Editing (Hartvigsen, Sankaranarayanan,
Palangi, Kim, Ghassemi, NeurIPS 2023): lifelong, sequential editing with a codebook.

At one layer l, GRACE keeps a codebook of (key, value, radius ε) entries. While the model
runs, the hidden state h at each position is compared with the keys; if the nearest key is
closer than its ε, h is *replaced* by that entry's value, else the layer is left alone:

    h' = v_j  if ||h - k_j|| < ε_j  for j = argmin_j ||h - k_j||,   else h

An edit adds an entry: its key is h at the prompt's last token, its value is optimised so
that the model then says the new object. An input close to an old edit's key reuses its
value (the ε-ball is the edit's scope); a new edit whose key falls inside a ball with a
*different* answer splits the two balls. Weights never change, so edits cannot interfere
outside their balls: that is why GRACE survives thousands of sequential edits, where
sequential ROME degrades. Its weakness is generalisation: a paraphrase whose hidden state
lands outside the ball is not edited.

**Simplifications of the reference code** (also stated in notebook 07):

* site: the codebook sits at the output of block ``cfg.layer`` and the hidden state at
  *every* position of every input is compared with the keys (a hit replaces that position's
  state); the key of an edit is the state at its prompt's last token;
* matching: nearest key, Euclidean distance, hit when it is inside that entry's ε. There is
  no ε-expansion: a new edit inside a ball with the *same* answer adds an entry instead of
  growing the ball; only conflicting answers split the two balls;
* ε is one radius for all entries, calibrated from typical key distances (:meth:`calibrate`).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from lfmlab.core.hooks import capture
from lfmlab.core.lm import encode_prompt, pair_batch
from lfmlab.core.params import device_of, frozen
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest
from lfmlab.editing.base import Edit, as_edit
from lfmlab.zoo.layers import layers


def calibration_prompts(world, n: int = 300) -> list[str]:
    """Prompts to set ε from (:meth:`Grace.calibrate`): the first ``n`` train facts under train
    template 1, which no edit metric scores (the neighbourhood is graded under template 0)."""
    return [world.prompt(f.subject, f.relation, world.UNSCORED_TEMPLATE) for f in world.facts_of(split="train")[:n]]


@dataclass
class GraceConfig:
    layer: int = 3
    eps: float | None = None    # ball radius; None: calibrated from typical key distances
    value_steps: int = 100
    value_lr: float = 0.5


class Grace(nn.Module):
    """``base`` with a GRACE codebook at ``cfg.layer``'s block output. Use like the base model."""

    memory_fields = ("keys", "values", "radii", "answers")   # what the edits add (arena footprint)

    def __init__(self, base: nn.Module, tokenizer: Tokenizer, config: GraceConfig | None = None):
        cfg = config
        super().__init__()
        self.base, self.tokenizer, self.cfg = base, tokenizer, cfg or GraceConfig()
        self.config = base.config
        self.name = layers(base).block_name(self.cfg.layer)
        d = layers(base).hidden
        device = device_of(base)
        self.keys = torch.empty(0, d, device=device)
        self.values = torch.empty(0, d, device=device)
        self.radii = torch.empty(0, device=device)
        self.answers: list[str] = []
        self.eps = self.cfg.eps
        # The codebook acts only while this wrapper runs (its hook lives for one forward pass):
        # the base model itself is never edited, whoever else holds it (a panel, a notebook).

    def clear(self) -> None:
        """Empty the codebook (the model behaves exactly like the base model again)."""
        self.keys, self.values = self.keys[:0], self.values[:0]
        self.radii, self.answers = self.radii[:0], []

    def remove(self) -> None:
        """Nothing to detach: the codebook is hooked in only while the wrapper runs."""

    def _replace(self, module, args, output):
        if len(self.keys) == 0:
            return None
        h = output[0] if isinstance(output, tuple) else output  # [B, T, d]
        dist = torch.cdist(h.reshape(-1, h.shape[-1]), self.keys)  # [B*T, M]
        best_d, best = dist.min(-1)
        hit = best_d < self.radii[best]
        if not hit.any():
            return None
        flat = h.reshape(-1, h.shape[-1]).clone()
        flat[hit] = self.values[best[hit]]
        new = flat.view_as(h)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    def forward(self, input_ids, attention_mask=None, **kwargs):
        handle = self.base.get_submodule(self.name).register_forward_hook(self._replace)
        try:
            return SimpleNamespace(logits=self.base(input_ids=input_ids, attention_mask=attention_mask).logits)
        finally:
            handle.remove()

    def _key(self, prompt: str) -> torch.Tensor:
        ids = torch.tensor([encode_prompt(self.tokenizer, prompt)], device=self.keys.device)
        with torch.no_grad(), capture(self.base, [self.name]) as seen:   # the *unedited* hidden state
            self.base(input_ids=ids, attention_mask=torch.ones_like(ids))
        return seen[self.name][0, -1]

    def calibrate(self, prompts: list[str], share: float = 0.5) -> float:
        """ε = ``share`` x the median distance between the keys of different prompts."""
        keys = torch.stack([self._key(p) for p in prompts])
        dist = torch.cdist(keys, keys)
        self.eps = share * dist[~torch.eye(len(keys), dtype=torch.bool, device=dist.device)].median().item()
        return self.eps

    def add(self, request: EditRequest) -> dict:
        """Add one edit to the codebook (sequential editing: call once per edit, in order)."""
        request = as_edit(self.tokenizer, request)
        if self.eps is None:
            raise RuntimeError("call calibrate(prompts) first, or give GraceConfig(eps=...)")
        key = self._key(request.prompt)
        radius = torch.tensor(self.eps, device=key.device)
        if len(self.keys):
            dist = (self.keys - key).norm(dim=-1)
            j = int(dist.argmin())
            if dist[j] < self.radii[j] + radius and self.answers[j] != request.target_new:
                half = dist[j] / 2  # conflicting answers: split the balls
                self.radii[j] = torch.minimum(self.radii[j], half)
                radius = torch.minimum(radius, half)
        value = self._optimise_value(request, key)
        self.keys = torch.cat([self.keys, key[None]])
        self.values = torch.cat([self.values, value[None]])
        self.radii = torch.cat([self.radii, radius[None]])
        self.answers.append(request.target_new)
        return {"radius": radius.item(), "entries": len(self.keys)}

    def _optimise_value(self, request: Edit, key: torch.Tensor) -> torch.Tensor:
        batch = pair_batch(self.tokenizer, [request.prompt], [request.target_new], key.device)
        last = int(batch.prompt_len[0]) - 1
        value = key.clone().requires_grad_(True)
        opt = torch.optim.Adam([value], lr=self.cfg.value_lr)

        def put(module, args, output):
            h = (output[0] if isinstance(output, tuple) else output).clone()
            h[0, last] = value
            return (h, *output[1:]) if isinstance(output, tuple) else h

        with frozen(self.base):
            handle = self.base.get_submodule(self.name).register_forward_hook(put)
            try:
                for _ in range(self.cfg.value_steps):
                    loss = self.base(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
                    ).loss
                    if loss.item() < 0.05:
                        break
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            finally:
                handle.remove()
        return value.detach()
