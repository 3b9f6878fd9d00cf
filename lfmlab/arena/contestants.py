"""The arena's contestants: one adapter per method, one interface (``add`` / ``edited`` / ``clear``).

A :class:`Contestant` takes :class:`~lfmlab.arena.jobs.Update` objects (a weight editor reads
the request; a text-only method reads the fact's sentence), holds them, yields the model that
knows them inside ``edited()``, and forgets them on ``clear()``. The base model is never left
changed. :data:`CONTESTANTS` is the arena's registry: each row names the survey family, the
access the method needs and the jobs it is entered for.

Entered (the adapters are in :mod:`lfmlab.arena.adapters` and :mod:`lfmlab.arena.retrieval`):

* **model editing** (§6): FT-L, ROME, MEMIT (one request at a time, each on the model holding
  the earlier ones), MEMIT at once, AlphaEdit, GRACE, T-Patcher, IKE, SERAC: the editors of
  notebook 07 through :func:`lfmlab.editing.registry.editors`, with their defaults;
* **database augmentation** (§2.3): RAG with BM25 and the kNN-LM (the *add* job only: its
  datastore states every known fact four times, and one inserted sentence cannot outvote them);
* **model tuning** (§2.1): full fine-tuning on the fact's sentence, alone or with its other
  wordings, and LoRA on the MLPs merged after every update (:mod:`lfmlab.arena.finetune`);
* **model distillation** (§3): context distillation (:mod:`lfmlab.distill.context_distillation`):
  the model reading the fact's sentence teaches the model that does not;
* **model reuse** (§4.2): one LoRA patch per update trained on the unedited model, added to the
  weights by task arithmetic;
* **meta learning** (§5): MEND, the editor trained to edit (:mod:`lfmlab.editing.mend`).

MEND and SERAC (whose scope classifier and counterfactual model, a fine-tuned copy of the model,
hence its access, are trained) train on train facts of subjects no update names (``exclude``);
a trained editor is reused for the same model, seed and excluded subjects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from lfmlab import runtime
from lfmlab.arena import finetune as ft
from lfmlab.arena.adapters import AtOnceContestant, Contestant, DeltaContestant, EditorContestant, NoUpdate
from lfmlab.arena.jobs import JOBS, Update
from lfmlab.arena.retrieval import KNNLMContestant, RAGContestant
from lfmlab.arena.scorer import ACCESS, weights_hash
from lfmlab.distill import context_distillation as cd
from lfmlab.editing import memit, mend, serac
from lfmlab.editing import registry as editing
from lfmlab.editing.base import Deltas

__all__ = ["Contestant", "NoUpdate", "EditorContestant", "DeltaContestant", "AtOnceContestant", "RAGContestant",
           "KNNLMContestant", "ContestantInfo", "CONTESTANTS", "make"]


@dataclass(frozen=True)
class ContestantInfo:
    name: str
    family: str          # the survey's area
    access: str          # one of scorer.ACCESS
    summary: str
    make: Callable[[editing.Workbench, frozenset], Contestant]
    jobs: tuple[str, ...] = JOBS


def _editor(name: str) -> Callable[[editing.Workbench, frozenset], Contestant]:
    return lambda bench, exclude: EditorContestant(editing.editors(bench, {name: None})[name])


def _finetune(name: str, paraphrases: bool) -> Callable[[editing.Workbench, frozenset], Contestant]:
    cfg = ft.FinetuneConfig(paraphrases=paraphrases)
    return lambda bench, exclude: DeltaContestant(
        name, bench.model, lambda m, u: (ft.finetune(m, bench.tokenizer, ft.texts(u, paraphrases), cfg)[0], None))


def _lora(name: str, on_base: bool) -> Callable[[editing.Workbench, frozenset], Contestant]:
    cfg = ft.LoraPatchConfig()
    return lambda bench, exclude: DeltaContestant(
        name, bench.model, lambda m, u: ft.lora_patch(m, bench.tokenizer, ft.texts(u, cfg.paraphrases), cfg)[:2],
        on_base=on_base)


def _context_distillation(bench: editing.Workbench, exclude: frozenset) -> Contestant:
    cfg = cd.ContextDistillConfig(seed=bench.seed)

    def fn(model: nn.Module, u: Update) -> tuple[Deltas, None]:
        transfer = list(u.more_sentences) + cd.transfer_set(model, bench.tokenizer, u.sentence, u.subject,
                                                            cfg.samples, cfg.sample_tokens, cfg.seed)
        return cd.distill(model, bench.tokenizer, u.sentence, transfer, cfg)[0], None
    return DeltaContestant("context distillation", bench.model, fn)


def _memit_at_once(bench: editing.Workbench, exclude: frozenset) -> Contestant:
    cfg = memit.MemitConfig(edit_layers=tuple(range(bench.layer, bench.layer + 4)), seed=bench.seed)

    def solve(updates: list[Update]) -> Deltas:
        return memit.edit(bench.model, bench.tokenizer, [u.request for u in updates], cfg,
                          covs={k: bench.covariance(k) for k in cfg.edit_layers},
                          prefixes=bench.random_prefixes()).deltas
    return AtOnceContestant("MEMIT (at once)", bench.model, solve)


_TRAINED: dict[tuple, object] = {}      # trained editors, by (model weights, seed, excluded subjects)


def _trained(kind: str, bench: editing.Workbench, exclude: frozenset, train: Callable[[], object]):
    """Train once per model (weights, device, dtype), run length, seed and excluded subjects (a
    scale curve reuses the editor)."""
    p = next(bench.model.parameters())
    key = (kind, weights_hash(bench.model), str(p.device), p.dtype, runtime.smoke(), bench.seed, exclude)
    if key not in _TRAINED:
        if len(_TRAINED) >= 4:
            _TRAINED.pop(next(iter(_TRAINED)))
        _TRAINED[key] = train()
    return _TRAINED[key]


def _mend(bench: editing.Workbench, exclude: frozenset) -> Contestant:
    cfg = mend.MendConfig(seed=bench.seed, steps=150 if runtime.smoke() else 600)   # smoke: a shorter training
    trained = _trained("MEND", bench, exclude, lambda: mend.train(
        bench.model, bench.tokenizer, bench.world, cfg, exclude_subjects=set(exclude)))
    return EditorContestant(editing.editors(bench, {"MEND": trained})["MEND"])


def _serac(bench: editing.Workbench, exclude: frozenset) -> Contestant:
    from lfmlab import zoo

    def train():
        encoder = zoo.load("minilm")
        steps = 100 if runtime.smoke() else 300                                          # smoke: shorter
        scope, _ = serac.train_scope(encoder, bench.world, steps=steps, seed=bench.seed, exclude_subjects=set(exclude))
        cf = serac.train_counterfactual(bench.model, bench.tokenizer, bench.world, steps=steps, seed=bench.seed,
                                        exclude_subjects=set(exclude))
        return encoder, scope, cf
    encoder, scope, cf = _trained("SERAC", bench, exclude, train)
    memory = serac.Serac(bench.model, bench.tokenizer, encoder, scope, cf)
    return EditorContestant(editing.editors(bench, {"SERAC": memory})["SERAC"])


CONTESTANTS: dict[str, ContestantInfo] = {c.name: c for c in [
    ContestantInfo("FT-L", "model tuning", "weights and gradients",
                   "fine-tune one MLP layer on the edit prompt within an L∞ ball", _editor("FT-L")),
    ContestantInfo("ROME", "model editing", "weights and gradients",
                   "rank-one update of one MLP: W k* = v*", _editor("ROME")),
    ContestantInfo("MEMIT", "model editing", "weights and gradients",
                   "least-squares update spread over four MLPs", _editor("MEMIT")),
    ContestantInfo("T-Patcher", "model editing", "weights and gradients",
                   "one trained neuron per update in the last FFN", _editor("T-Patcher")),
    ContestantInfo("GRACE", "model editing", "weights and gradients",
                   "a codebook of hidden-state keys and learned values", _editor("GRACE")),
    ContestantInfo("IKE", "model editing", "text only",
                   "the new fact and demonstrations in the prompt", _editor("IKE")),
    ContestantInfo("RAG (BM25)", "database augmentation", "text only",
                   "the fact's sentence stored; the best match read before the prompt",
                   lambda bench, exclude: RAGContestant(bench.model, bench.tokenizer)),
    ContestantInfo("kNN-LM", "database augmentation", "weights only",
                   "the fact's sentence inserted in a datastore of the pretraining text; eq. 3 at every token",
                   lambda bench, exclude: KNNLMContestant(bench.model, bench.tokenizer, bench.world),
                   jobs=("add",)),   # its datastore states each known fact 4 times: one sentence cannot outvote them
    ContestantInfo("MEMIT (at once)", "model editing", "weights and gradients",
                   "MEMIT's least-squares update for all the updates in one solve", _memit_at_once),
    ContestantInfo("AlphaEdit", "model editing", "weights and gradients",
                   "MEMIT's update projected onto the null space of preserved keys", _editor("AlphaEdit")),
    ContestantInfo("FT (sentence)", "model tuning", "weights and gradients",
                   "every weight fine-tuned on the fact's sentence", _finetune("FT (sentence)", False)),
    ContestantInfo("FT (+ paraphrases)", "model tuning", "weights and gradients",
                   "every weight fine-tuned on the fact in three wordings", _finetune("FT (+ paraphrases)", True)),
    ContestantInfo("LoRA (merged)", "model tuning", "weights and gradients",
                   "a LoRA on the MLPs per update, trained on the current model and merged",
                   _lora("LoRA (merged)", False)),
    ContestantInfo("context distillation", "model distillation", "weights and gradients",
                   "the model reading the fact teaches the model that does not", _context_distillation),
    ContestantInfo("LoRA patches (task arithmetic)", "model reuse", "weights and gradients",
                   "one LoRA patch per update from the unedited model; θ0 + Σ τ_i",
                   _lora("LoRA patches (task arithmetic)", True)),
    ContestantInfo("MEND", "meta learning", "weights and gradients",
                   "a trained hypernetwork maps the update's gradient to a weight change", _mend),
    ContestantInfo("SERAC", "model editing", "weights and gradients",
                   "an update memory, a trained scope classifier and a counterfactual copy of the model", _serac),
]}
assert all(c.access in ACCESS for c in CONTESTANTS.values())


def make(name: str, bench: editing.Workbench, exclude: set[str] | frozenset = frozenset()) -> Contestant:
    """The contestant ``name`` for ``bench.model``; KeyError lists the registry. ``exclude``: the
    subjects of the updates it will get, which a contestant that trains (MEND, SERAC) never sees."""
    if name not in CONTESTANTS:
        raise KeyError(f"unknown contestant {name!r}; the arena has {', '.join(CONTESTANTS)}")
    return CONTESTANTS[name].make(bench, frozenset(exclude))
