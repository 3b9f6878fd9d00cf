"""The editing area's registry: every editor, and one way to build it for a model.

>>> bench = Workbench(model, tok, world.load(), layer=0)
>>> eds = editors(bench)                                   # the editors that need no training
>>> eds = editors(bench, {"ROME": None, "MEND": trained})   # chosen ones; a config or a ready editor
>>> with eds["ROME"].applied(request) as edited:
...     lm.top_k(edited, tok, request.prompt)

Notebook 07, the editing panel (``widgets/editing.ipynb``) and ``benchmarks/editing.py`` all read
:data:`METHODS`. Adding an editor is one module and one row here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from lfmlab.core.registry import MethodInfo
from lfmlab.data.world import World
from lfmlab.editing import alphaedit, covariance, ft, grace, ike, kn, memit, mend, rome, serac, tpatcher
from lfmlab.editing.base import EditResult
from lfmlab.editing.editor import DeltaEditor, Editor, MemoryEditor

__all__ = ["Workbench", "METHODS", "editors"]


@dataclass
class Workbench:
    """What the editors of one model share: the model, its tokenizer, the world facts, the layer that
    causal tracing picked, and (computed once, on first use) each layer's key covariance and ROME's
    random prefixes. Pass ``covariances={layer: C}`` / ``prefixes`` that are already computed."""

    model: nn.Module
    tokenizer: Any
    world: World
    layer: int = 0
    seed: int = 0
    n_prefixes: int = 10
    covariances: dict[int, torch.Tensor] = field(default_factory=dict)
    prefixes: list[str] | None = None

    def covariance(self, layer: int) -> torch.Tensor:
        if layer not in self.covariances:
            self.covariances[layer] = covariance.key_covariance(self.model, self.tokenizer, layer)
        return self.covariances[layer]

    def random_prefixes(self) -> list[str]:
        if self.prefixes is None:
            self.prefixes = rome.random_prefixes(self.model, self.tokenizer, self.n_prefixes, (5, 10), seed=self.seed)
        return self.prefixes


def _delta(name: str, bench: Workbench, edit: Callable) -> Editor:
    return DeltaEditor(name, bench.model, edit)


def _rome(name: str, anchored: bool) -> Callable[[Workbench, Any], Editor]:
    def make(bench: Workbench, cfg: rome.RomeConfig | None) -> Editor:
        cfg = cfg or rome.RomeConfig(layer=bench.layer, seed=bench.seed, **(rome.ANCHORED if anchored else {}))
        return _delta(name, bench, lambda r: rome.edit(bench.model, bench.tokenizer, r, cfg,
                                                       cov=bench.covariance(cfg.layer),
                                                       prefixes=bench.random_prefixes()))
    return make


def _memit(bench: Workbench, cfg: memit.MemitConfig | None) -> Editor:
    cfg = cfg or memit.MemitConfig(edit_layers=tuple(range(bench.layer, bench.layer + 4)), seed=bench.seed)
    # every edited layer's C from the unedited model, computed once (MEMIT's second-moment
    # statistics are the pretrained model's); a sequential edit must not re-estimate them
    return _delta("MEMIT", bench, lambda r: memit.edit(bench.model, bench.tokenizer, [r], cfg,
                                                       covs={k: bench.covariance(k) for k in cfg.edit_layers},
                                                       prefixes=bench.random_prefixes()))


def _alphaedit(bench: Workbench, cfg: alphaedit.AlphaEditConfig | None) -> Editor:
    cfg = cfg or alphaedit.AlphaEditConfig(edit_layers=tuple(range(bench.layer, bench.layer + 4)), seed=bench.seed)
    editor = alphaedit.AlphaEdit(bench.model, bench.tokenizer, cfg, {k: bench.covariance(k) for k in cfg.edit_layers},
                                 bench.random_prefixes())
    return DeltaEditor("AlphaEdit", bench.model, editor, reset=editor.reset)


def _ft(name: str, kind: type) -> Callable[[Workbench, Any], Editor]:
    def make(bench: Workbench, cfg: ft.FTConfig | None) -> Editor:
        cfg = cfg or kind(layer=bench.layer)
        return _delta(name, bench, lambda r: ft.edit(bench.model, bench.tokenizer, r, cfg))
    return make


def _kn(bench: Workbench, cfg: kn.KNConfig | None) -> Editor:
    return _delta("KN", bench, lambda r: kn.edit(bench.model, bench.tokenizer, r, cfg))


def _mend(bench: Workbench, given: mend.MendConfig | mend.Mend | None) -> Editor:
    editor = given if isinstance(given, mend.Mend) else mend.train(bench.model, bench.tokenizer, bench.world, given)
    return _delta("MEND", bench, lambda r: editor.edit(bench.model, bench.tokenizer, r))


def _serac(bench: Workbench, given: serac.Serac | None) -> Editor:
    if given is None:
        from lfmlab import zoo

        encoder = zoo.load("minilm")
        scope, _ = serac.train_scope(encoder, bench.world, seed=bench.seed)
        cf = serac.train_counterfactual(bench.model, bench.tokenizer, bench.world, seed=bench.seed)
        given = serac.Serac(bench.model, bench.tokenizer, encoder, scope, cf)
    return MemoryEditor("SERAC", given)


def _grace(bench: Workbench, given: grace.GraceConfig | grace.Grace | None) -> Editor:
    if not isinstance(given, grace.Grace):
        g = grace.Grace(bench.model, bench.tokenizer, given)
        g.calibrate(grace.calibration_prompts(bench.world), share=0.25)
        given = g
    return MemoryEditor("GRACE", given)


def _ike(bench: Workbench, given: ike.IKEConfig | ike.IKE | None) -> Editor:
    memory = given if isinstance(given, ike.IKE) else ike.IKE(bench.model, bench.tokenizer, bench.world, given)
    return MemoryEditor("IKE", memory)


def _tpatcher(bench: Workbench, given: tpatcher.TPatcherConfig | tpatcher.TPatcher | None) -> Editor:
    memory = given if isinstance(given, tpatcher.TPatcher) else tpatcher.TPatcher(
        bench.model, bench.tokenizer, bench.world, given or tpatcher.TPatcherConfig(seed=bench.seed))
    return MemoryEditor("T-Patcher", memory)


def _row(name, summary, paper, run, config, make, trains=False):
    return MethodInfo(name, summary, paper, "§6", run, EditResult, "07_model_editing", config,
                      {"make": make, "trains": trains})


METHODS: dict[str, MethodInfo] = {m.name: m for m in [
    _row("FT", "fine-tune one MLP layer on the edit prompt", "Zhu et al. 2020", ft.edit, ft.FTConfig,
         _ft("FT", ft.FTConfig)),
    _row("FT-L", "FT within an L∞ ball around the old weights", "Zhu et al. 2020", ft.edit, ft.FTConfig,
         _ft("FT-L", ft.FTL)),
    _row("KN", "find the fact's knowledge neurons, rewrite their value vectors", "Dai et al. 2022", kn.edit,
         kn.KNConfig, _kn),
    _row("ROME", "rank-one update of one MLP: W k* = v*", "Meng et al. 2022a", rome.edit, rome.RomeConfig,
         _rome("ROME", anchored=False)),
    _row("ROME + same-subject KL", "ROME that also holds the subject's other facts", "Meng et al. 2022a (variant)",
         rome.edit, rome.RomeConfig, _rome("ROME + same-subject KL", anchored=True)),
    _row("MEMIT", "least-squares update spread over several MLPs, many edits at once", "Meng et al. 2023",
         memit.edit, memit.MemitConfig, _memit),
    _row("AlphaEdit", "MEMIT's update projected onto the null space of the preserved keys", "Fang et al. 2025",
         alphaedit.edit, alphaedit.AlphaEditConfig, _alphaedit),
    _row("MEND", "a trained hypernetwork maps the edit's gradient to a weight change", "Mitchell et al. 2022a",
         mend.train, mend.MendConfig, _mend, trains=True),
    _row("SERAC", "an edit memory, a scope classifier and a counterfactual model", "Mitchell et al. 2022b",
         serac.Serac, None, _serac, trains=True),
    _row("T-Patcher", "one trained neuron per edit in the last FFN, quiet on other text", "Huang et al. 2023",
         tpatcher.TPatcher, tpatcher.TPatcherConfig, _tpatcher),
    _row("IKE", "the new fact and demonstrations in the prompt; no weight changes", "Zheng et al. 2023",
         ike.IKE, ike.IKEConfig, _ike),
    _row("GRACE", "a codebook of hidden-state keys and learned values at one layer", "Hartvigsen et al. 2023",
         grace.Grace, grace.GraceConfig, _grace),
]}

def editors(bench: Workbench, chosen: dict[str, Any] | None = None) -> dict[str, Editor]:
    """Editors for ``bench.model``, in registry order. ``chosen`` maps a method's name to its config,
    a ready editor object (a trained MEND, a SERAC or GRACE wrapper), or ``None`` for the default;
    without it, every method that needs no training."""
    if chosen is None:
        chosen = {name: None for name, m in METHODS.items() if not m.extra["trains"]}
    unknown = [n for n in chosen if n not in METHODS]
    if unknown:
        raise KeyError(f"unknown editors {unknown}; the registry has {', '.join(METHODS)}")
    return {name: METHODS[name].extra["make"](bench, chosen[name]) for name in METHODS if name in chosen}
