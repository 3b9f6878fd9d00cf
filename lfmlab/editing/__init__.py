"""Model editing (survey §6): locate (causal tracing), then edit.

* :mod:`trace` — causal tracing: which layer's MLP recalls a fact (Meng et al. 2022a).
* :mod:`ft` (FT, FT-L), :mod:`kn`, :mod:`rome`, :mod:`memit`, :mod:`mend` — editors that return
  weight deltas; :mod:`serac`, :mod:`grace` — editors that keep a memory beside the model.
* :mod:`editor` — one interface for both kinds: ``with editor.applied(request) as model:``.
* :mod:`registry` — :data:`METHODS`, every editor with its paper and config, and :func:`editors`,
  which builds them for a model (read by notebook 07, the editing panel and the benchmark).
* :mod:`metrics` (efficacy, paraphrase, neighbourhood, same-subject), :mod:`bench` (many requests,
  one at a time or in sequence), :mod:`negation` (forgetting a relation), :mod:`covariance`.
"""
from lfmlab.editing.editor import DeltaEditor, Editor, MemoryEditor, as_editor
from lfmlab.editing.registry import METHODS, Workbench, editors

__all__ = ["METHODS", "Workbench", "editors", "Editor", "DeltaEditor", "MemoryEditor", "as_editor"]
