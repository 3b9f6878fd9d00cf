"""Fine-tuning on the facts' sentences, as the arena's tuning and reuse contestants (survey §2.1, §4.2).

The question these answer (Ovadia et al., EMNLP 2024; Thede et al., *WikiBigEdit*, ICML 2025):
can plain training on text that states a fact put the fact in the model, next to the editors?

* :func:`finetune`: **full fine-tuning** on next-token cross-entropy over the fact's sentence
  (train template 1), or over it and its paraphrases (train templates 2 and 3: Ovadia et al.'s
  finding is that fine-tuning learns new facts only when it sees them in several wordings):

      min_θ  − Σ_s Σ_t log p_θ(s_t | s_<t)     over the update's sentences s;

* :func:`lora_patch`: the same loss through **LoRA** factors on every MLP (Hu et al. 2022: eq. 3,
  h = W0 x + B A x, with B A scaled by α/r as §4.1 says), returned merged as a weight change
  ΔW = (α/r) B A.

The contestants (:mod:`lfmlab.arena.contestants`) use them two ways:

* *continual* (tuning): each update is trained on the model that holds the earlier ones, and
  its change is added (fine-tuning; LoRA merged after every update, WikiBigEdit's
  "LoRA + merging" baseline, one update per batch);
* *task arithmetic* (reuse, Ilharco et al. 2023, eq. θ = θ0 + λ Σ_i τ_i): every update's LoRA
  patch τ_i is trained on the *unedited* model θ0, alone, and the patches are added with λ = 1.

Simplifications: a fixed number of Adam steps (no schedule, no early stopping by validation),
one update per batch; the hyperparameters were chosen on 10 updates of each job at seeds 11 and
12, never on the seeds a notebook grades.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lfmlab.arena.jobs import Update
from lfmlab.core.lmtrain import fit_deltas, sentence_batch
from lfmlab.core.params import device_of, evaluating
from lfmlab.core.types import Tokenizer
from lfmlab.zoo.layers import as_weight_layout
from lfmlab.zoo.lora import add_lora, lora_modules

__all__ = ["FinetuneConfig", "LoraPatchConfig", "texts", "finetune", "lora_patch"]

Deltas = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 6
    lr: float = 3e-4
    paraphrases: bool = False    # also train on the fact's other unscored wordings
    stop_loss: float = 0.05      # mean next-token NLL per sentence token


@dataclass(frozen=True)
class LoraPatchConfig:
    rank: int = 4
    alpha: float = 8.0
    steps: int = 20
    lr: float = 1e-3
    targets: str = "mlp"         # facts live in the MLPs (Geva et al. 2021; ROME)
    paraphrases: bool = True
    seed: int = 0


def texts(update: Update, paraphrases: bool) -> list[str]:
    """What a fine-tuning contestant reads: the fact's sentence, and its other wordings if asked."""
    return [update.sentence, *update.more_sentences] if paraphrases else [update.sentence]


def _lm_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over the sentences' tokens (padding ignored)."""
    ids, mask, labels = batch
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)


def finetune(model: nn.Module, tokenizer: Tokenizer, sentences: list[str],
             config: FinetuneConfig | None = None) -> tuple[Deltas, list[float]]:
    """Every parameter of ``model`` trained on ``sentences``; returns the change and the losses
    (the model is restored)."""
    cfg = config or FinetuneConfig()
    batch = sentence_batch(tokenizer, sentences, device_of(model))
    names = [n for n, _ in model.named_parameters()]
    return fit_deltas(model, names, lambda: _lm_loss(model, batch), cfg.steps, cfg.lr, cfg.stop_loss)


def lora_patch(model: nn.Module, tokenizer: Tokenizer, sentences: list[str],
               config: LoraPatchConfig | None = None) -> tuple[Deltas, int, list[float]]:
    """A LoRA patch trained on ``sentences`` (a copy of ``model`` holds the factors): the merged
    change of each adapted weight, the bytes of the factors that store it, and the losses."""
    cfg = config or LoraPatchConfig()
    batch = sentence_batch(tokenizer, sentences, device_of(model))
    patched = add_lora(model, cfg.rank, cfg.alpha, cfg.targets, seed=cfg.seed)
    mods = lora_modules(patched)
    params = [p for m in mods.values() for p in (m.lora_A, m.lora_B)]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    losses = []
    with evaluating(patched):
        for _ in range(cfg.steps):
            loss = _lm_loss(patched, batch)
            losses.append(round(loss.item(), 4))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        deltas = {f"{name}.weight": as_weight_layout(m.base, m.delta().T).detach().clone()
                  for name, m in mods.items()}
    stored = sum(p.numel() * p.element_size() for p in params)
    return deltas, stored, losses
