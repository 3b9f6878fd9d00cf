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
__all__ = ["METHODS", "Workbench", "editors", "Editor", "DeltaEditor", "MemoryEditor", "as_editor"]

_HOME = {"METHODS": "registry", "Workbench": "registry", "editors": "registry", "Editor": "editor",
         "DeltaEditor": "editor", "MemoryEditor": "editor", "as_editor": "editor"}


def __getattr__(name: str):
    """The registry and the Editor interface, imported on first use (the submodules stay on demand)."""
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(f"lfmlab.editing.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
