"""How good is an edit? Two families of metrics, both computed here (DESIGN.md §6).

**CounterFact-style** (ROME, Meng et al. 2022), probability *comparisons*:

* efficacy: share of edits where P(new) > P(true) on the edit prompt;
* paraphrase: the same on held-out paraphrase prompts;
* neighbourhood: share of *other* subjects' facts (same relation) whose prediction is unchanged
  by the edit (teacher-forced argmax over their object is identical before and after);
  ``neighbourhood_score`` is ROME's NS: P(their true object) > P(the edit's new object);
* same_subject: share of the edited subject's *other* facts that are still recalled. No
  benchmark reports it, yet it is where ROME is weakest on a small model.

**EasyEdit-style** (Wang et al. 2023), token *accuracy* under teacher forcing:

* reliability: share of the new object's tokens that are the argmax on the edit prompt;
* generality: the same on paraphrases;
* locality: share of neighbour-prompt tokens whose argmax is unchanged by the edit.

Why the numbers differ: "P(new) > P(true)" only asks the new answer to beat the old one (it
can win with p = 0.3 while a third answer has 0.5), whereas token accuracy asks the new
answer to be the model's top choice at every one of its tokens. Efficacy is therefore usually
higher than reliability, and a multi-token object counts once in efficacy but token by token
in reliability.

**Summed vs length-normalised.** Efficacy and paraphrase here compare the *summed* log-prob of
the whole object, log P(new) > log P(true). ROME's evaluation code compares the per-token
*mean* log-prob (length-normalised), which judges a long object by its average token rather
than by the product of all of them; ``length_normalised=True`` in :func:`score_one` and
:func:`evaluate` gives that form. The two agree on single-token objects.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lfmlab.core.lm import pair_batch, token_logprobs
from lfmlab.core.params import device_of
from lfmlab.core.types import Tokenizer
from lfmlab.data.world import EditRequest


@dataclass
class PairStats:
    """Per (prompt, target) pair: total log-prob [N], token accuracy [N], argmax token ids."""

    logprob: torch.Tensor
    token_acc: torch.Tensor
    argmax: list[tuple[int, ...]]
    n_tokens: torch.Tensor | None = None  # target tokens per pair [N]


@torch.no_grad()
def pair_stats(model: nn.Module, tokenizer: Tokenizer, prompts: list[str], targets: list[str],
               batch_size: int = 256) -> PairStats:
    """Teacher-forced statistics of each pair. Memory-based editors (SERAC) route on the prompt
    alone: a model with ``needs_prompt_len`` is also told where each answer starts."""
    device = device_of(model)
    lps, accs, argmaxes, counts = [], [], [], []
    for i in range(0, len(prompts), batch_size):
        b = pair_batch(tokenizer, prompts[i:i + batch_size], targets[i:i + batch_size], device)
        extra = {"prompt_len": b.prompt_len} if getattr(model, "needs_prompt_len", False) else {}
        tok = token_logprobs(model(input_ids=b.input_ids, attention_mask=b.attention_mask, **extra).logits, b.labels)
        lps.append(tok.total.cpu())
        accs.append(tok.token_accuracy.cpu())
        counts.append(tok.is_target.sum(-1).cpu())
        argmaxes += [tuple(tok.top[r][tok.is_target[r]].tolist()) for r in range(len(tok.top))]
    if not lps:
        return PairStats(torch.empty(0), torch.empty(0), [], torch.empty(0))
    return PairStats(torch.cat(lps), torch.cat(accs), argmaxes, torch.cat(counts))


@dataclass
class Reference:
    """The unedited model's answers on the neighbourhood and same-subject prompts."""

    neighbour_argmax: list[list[tuple[int, ...]]]
    same_subject_hit: list[torch.Tensor]


def reference(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest]) -> Reference:
    """Record what the unedited model predicts, to measure what an edit changes."""
    nb = [pair_stats(model, tokenizer, [p for p, _ in r.neighbourhood], [o for _, o in r.neighbourhood]).argmax
          for r in requests]
    ss = [_hits(model, tokenizer, r.same_subject) for r in requests]
    return Reference(nb, ss)


def _hits(model, tokenizer: Tokenizer, pairs) -> torch.Tensor:
    if not pairs:
        return torch.empty(0, dtype=torch.bool)
    return pair_stats(model, tokenizer, [p for p, _ in pairs], [o for _, o in pairs]).token_acc == 1.0


@dataclass
class EditScores:
    efficacy: float
    paraphrase: float
    neighbourhood: float
    neighbourhood_score: float
    same_subject: float
    reliability: float
    generality: float
    locality: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"efficacy {self.efficacy:.3f} | paraphrase {self.paraphrase:.3f} | neighbourhood "
                f"{self.neighbourhood:.3f} (NS {self.neighbourhood_score:.3f}) | same-subject {self.same_subject:.3f} "
                f"|| reliability {self.reliability:.3f} | generality {self.generality:.3f} | "
                f"locality {self.locality:.3f}  (n={self.n})")


def _mean(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float).nanmean()) if values else float("nan")


def score_one(model: nn.Module, tokenizer: Tokenizer, request: EditRequest, ref_argmax: list[tuple[int, ...]],
              ref_same: torch.Tensor, length_normalised: bool = False) -> dict[str, float]:
    """All metrics of one request on ``model`` (the model with this edit applied).
    ``length_normalised``: compare mean per-token log-probs (ROME's code) instead of sums."""
    prompts = [request.prompt, *request.paraphrase_prompts]
    k = len(prompts)
    both = pair_stats(model, tokenizer, prompts * 2, [request.target_new] * k + [request.target_true] * k)
    lp = both.logprob / both.n_tokens if length_normalised else both.logprob
    new_lp, true_lp = lp[:k], lp[k:]
    wins = (new_lp > true_lp).float()
    nb_prompts = [p for p, _ in request.neighbourhood]
    nb = pair_stats(model, tokenizer, nb_prompts, [o for _, o in request.neighbourhood])
    nb_new = pair_stats(model, tokenizer, nb_prompts, [request.target_new] * len(nb_prompts))
    if length_normalised and nb_prompts:
        nb = PairStats(nb.logprob / nb.n_tokens, nb.token_acc, nb.argmax, nb.n_tokens)
        nb_new = PairStats(nb_new.logprob / nb_new.n_tokens, nb_new.token_acc, nb_new.argmax, nb_new.n_tokens)
    same = _hits(model, tokenizer, request.same_subject)
    unchanged = [a == b for a, b in zip(nb.argmax, ref_argmax)]
    tok_same = [sum(x == y for x, y in zip(a, b)) / max(1, len(b)) for a, b in zip(nb.argmax, ref_argmax)]
    kept = same[ref_same] if len(ref_same) else same
    return {
        "efficacy": wins[0].item(),
        "paraphrase": wins[1:].mean().item() if k > 1 else float("nan"),
        "neighbourhood": _mean([float(u) for u in unchanged]),
        "neighbourhood_score": (nb.logprob > nb_new.logprob).float().mean().item() if nb_prompts else float("nan"),
        "same_subject": kept.float().mean().item() if len(kept) else float("nan"),
        "reliability": both.token_acc[0].item(),
        "generality": both.token_acc[1:k].mean().item() if k > 1 else float("nan"),
        "locality": _mean(tok_same),
    }


def summarise(rows: list[dict[str, float]]) -> EditScores:
    keys = ("efficacy", "paraphrase", "neighbourhood", "neighbourhood_score", "same_subject",
            "reliability", "generality", "locality")
    return EditScores(**{key: _mean([r[key] for r in rows]) for key in keys}, n=len(rows))


def evaluate(model: nn.Module, tokenizer: Tokenizer, requests: list[EditRequest], ref: Reference,
             length_normalised: bool = False) -> EditScores:
    """Metrics of ``requests`` on a model in which all of them are applied (batch editing)."""
    return summarise([score_one(model, tokenizer, r, a, s, length_normalised)
                      for r, a, s in zip(requests, ref.neighbour_argmax, ref.same_subject_hit)])
