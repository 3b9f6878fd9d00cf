"""Transformer-Patcher: one mistake worth one neuron (Huang, Shen, Zhang, Zhou, Rong, Xiong,
ICLR 2023; survey §6.1, editors that add parameters).

Every edit adds **one neuron** (a patch: key k, bias b, value v) to the FFN of the last layer;
no existing weight changes. For the FFN's input q at a position (the paper's eq. 3–4):

    FFN_p(q) = FFN(q) + a_p v,        a_p = act(q·k + b)

with act the FFN's own activation. The patch is trained for its edit alone, the earlier
patches staying frozen, with three losses (the paper's eq. 5–8):

* edit loss     l_e = −log P(y_e | x_e), the patched model on the edit;
* activation    l_a = Σ_p max(0, β_a − (q_p·k + b)) over the edit's positions: it fires there;
* memory        l_m = Σ_i max(0, (q_i·k + b) − β_m) + max(0, (q_i·k + b) − min_p(q_p·k + b) + γ)
  over the FFN inputs q_i of *memory* text (inputs the model already handles): it stays quiet
  there, and below its activation on the edit by a margin γ;

    L = l_e + a·l_a + m·l_m.

The last FFN's inputs do not depend on any patch (a patch adds to that FFN's output only), so
the edit's and the memory's inputs are computed once and the patch trains on cached tensors:
each step is the final norm and the unembedding of a handful of positions.

Simplifications, stated: the memory set is 200 of world-lm's train facts of other subjects under
the train template no edit request scores (the paper samples its memory from the training data);
the losses are averaged, not summed; the key starts at the edit's mean input over its squared
norm (so that q_e·k ≈ 1) and the value at zero, and training stops at ``steps`` or once the edit's
answer is the argmax at every target token with every activation margin met.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.core.hooks import capture
from lfmlab.core.lm import pair_batch
from lfmlab.core.params import device_of, evaluating, frozen
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest, World
from lfmlab.editing.base import Edit, as_edit
from lfmlab.zoo.layers import layers

__all__ = ["TPatcherConfig", "TPatcher"]


@dataclass
class TPatcherConfig:
    steps: int = 150
    lr: float = 0.05
    act_margin: float = 3.0        # β_a: the patch's pre-activation on the edit's positions
    memory_margin: float = -3.0    # β_m: ... and on memory text (GELU(-3) ≈ -0.004)
    gap: float = 5.0               # γ: memory stays this far below the edit
    act_weight: float = 1.0        # a
    memory_weight: float = 1.0     # m
    n_memory: int = 200
    seed: int = 0

    def __post_init__(self):
        if not (isinstance(self.steps, int) and 1 <= self.steps <= 10_000):
            raise ValueError(f"steps = {self.steps!r}: choose between 1 and 10000")
        if not (self.lr == self.lr and 0 < self.lr <= 10):
            raise ValueError(f"lr = {self.lr!r}: a learning rate in (0, 10], e.g. 0.05")
        if not self.memory_margin < self.act_margin:
            raise ValueError(f"memory_margin ({self.memory_margin}) must be below act_margin ({self.act_margin}): "
                             "the patch must fire on the edit and not on memory text")


class TPatcher(nn.Module):
    """``base`` with one trainable neuron per edit in its last FFN. Use like the base model;
    ``add`` trains and adds a patch, ``clear`` removes them all. The base is never changed."""

    memory_fields = ("keys", "biases", "values")   # what the edits add (arena footprint)

    def __init__(self, base: nn.Module, tokenizer: Tokenizer, world: World, config: TPatcherConfig | None = None):
        super().__init__()
        self.base, self.tokenizer, self.world = base, tokenizer, world
        self.cfg = config or TPatcherConfig()
        self.config = base.config
        layout = layers(base)
        self.mlp_name = layout.mlp_name(layout.n_layers - 1)
        self.final_norm = base.get_submodule(layout.final_norm_name)
        self.head = base.get_output_embeddings()
        mlp = base.get_submodule(self.mlp_name)
        self.act = getattr(mlp, "act", None) or mlp.act_fn          # GPT-2 and NeoX: act; Llama: act_fn
        d = layout.hidden
        self.keys = torch.zeros(0, d)
        self.biases = torch.zeros(0)
        self.values = torch.zeros(0, d)
        self._memory: dict[str, torch.Tensor] = {}         # subject excluded -> memory inputs [M, d]

    # the patched forward -------------------------------------------------------------------
    def patch_out(self, q: torch.Tensor) -> torch.Tensor:
        """Σ_p act(q·k_p + b_p) v_p for FFN inputs q [..., d]."""
        K, b, V = (t.to(q.device, q.dtype) for t in (self.keys, self.biases, self.values))
        return self.act(q @ K.T + b) @ V

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if not len(self.keys):
            return self.base(input_ids=input_ids, attention_mask=attention_mask)
        handle = self.base.get_submodule(self.mlp_name).register_forward_hook(
            lambda mod, args, out: out + self.patch_out(args[0]))
        try:
            with torch.no_grad():
                return SimpleNamespace(logits=self.base(input_ids=input_ids, attention_mask=attention_mask).logits)
        finally:
            handle.remove()

    # what a patch is trained on ------------------------------------------------------------
    @torch.no_grad()
    def _inputs(self, prompts: list[str], targets: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each target token of each (prompt, target): the last FFN's input q and the final
        residual stream h (earlier patches included) at the position that predicts it, and the token."""
        device = device_of(self.base)
        batch = pair_batch(self.tokenizer, prompts, targets, device)
        norm = layers(self.base).final_norm_name
        with capture(self.base, [self.mlp_name], inputs=True) as seen_q:
            with capture(self.base, [norm], inputs=True) as seen_h:
                handle = self.base.get_submodule(self.mlp_name).register_forward_hook(
                    lambda mod, args, out: out + self.patch_out(args[0]) if len(self.keys) else out)
                try:
                    self.base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                finally:
                    handle.remove()
        rows, cols = (batch.labels[:, 1:] != -100).nonzero(as_tuple=True)       # predicting positions
        return seen_q[self.mlp_name][rows, cols], seen_h[norm][rows, cols], batch.labels[rows, cols + 1]

    def memory(self, subject: str) -> torch.Tensor:
        """The last FFN's inputs at every position of the memory text (other subjects' facts)."""
        if subject not in self._memory:
            facts = self.world.generic_prompts(self.cfg.n_memory, seed=self.cfg.seed, exclude={subject})
            device = device_of(self.base)
            batch = pair_batch(self.tokenizer, [p for p, _, _ in facts], [o for _, _, o in facts], device)
            with torch.no_grad(), capture(self.base, [self.mlp_name], inputs=True) as seen:
                self.base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            self._memory = {subject: seen[self.mlp_name][batch.attention_mask.bool()]}  # keep one
        return self._memory[subject]

    def train_patch(self, edit: Edit) -> dict:
        """Train one patch for ``edit`` (earlier patches frozen); returns its losses and steps."""
        cfg = self.cfg
        q_e, h_e, y_e = self._inputs([edit.prompt], [edit.target_new])                # [P, d], [P, d], [P]
        q_m = self.memory(edit.subject)                                               # [M, d]
        mean = q_e.mean(0)
        k = (mean / mean.pow(2).sum()).clone().requires_grad_(True)                   # q_e·k ≈ 1 at the start
        b = torch.zeros((), device=q_e.device, requires_grad=True)
        v = torch.zeros_like(mean, requires_grad=True)
        opt = torch.optim.Adam([k, b, v], lr=cfg.lr)
        torch.manual_seed(cfg.seed)
        for step in range(1, cfg.steps + 1):
            s_e, s_m = q_e @ k + b, q_m @ k + b
            logits = self.head(self.final_norm(h_e + self.act(s_e)[:, None] * v))
            l_e = F.cross_entropy(logits, y_e)
            l_a = F.relu(cfg.act_margin - s_e).mean()
            l_m = F.relu(s_m - cfg.memory_margin).mean() + F.relu(s_m - s_e.min() + cfg.gap).mean()
            loss = l_e + cfg.act_weight * l_a + cfg.memory_weight * l_m
            done = bool((logits.argmax(-1) == y_e).all()) and l_a.item() == 0.0 and l_m.item() == 0.0
            if done:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            self.keys = torch.cat([self.keys.to(k.device), k.detach()[None]])
            self.biases = torch.cat([self.biases.to(k.device), b.detach()[None]])
            self.values = torch.cat([self.values.to(k.device), v.detach()[None]])
        return {"steps": step, "edit_loss": l_e.item(), "activation_loss": l_a.item(), "memory_loss": l_m.item(),
                "memory_firing": float((s_m > 0).float().mean()), "patches": len(self.keys)}

    def add(self, request: EditRequest | Edit) -> dict:
        edit = as_edit(self.tokenizer, request)
        with evaluating(self.base), frozen(self.base), torch.enable_grad():
            start = time.perf_counter()
            info = self.train_patch(edit)
        return {**info, "seconds": time.perf_counter() - start}

    def clear(self) -> None:
        self.keys, self.biases, self.values = self.keys[:0], self.biases[:0], self.values[:0]
