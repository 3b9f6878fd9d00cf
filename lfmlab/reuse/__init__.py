"""Model reuse (survey §4): ensembles, weight interpolation, task arithmetic, mode connectivity
and merging by optimisation. Operators work on state dicts (see :mod:`lfmlab.core.state`).

* ensembles: :mod:`ensemble` (logit averaging), :mod:`batchensemble`;
* interpolation and averaging: :mod:`interpolate`, :mod:`slerp`, :mod:`soups`, :mod:`model_stock`,
  :mod:`lawa`;
* task vectors: :mod:`task_arithmetic`, :mod:`ties`, :mod:`dare`, :mod:`tsv` (TSV-M);
* merging by statistics or optimisation: :mod:`fisher`, :mod:`regmean`, :mod:`adamerging`;
* geometry: :mod:`connectivity` (linear and Bézier paths), :mod:`rebasin`, :mod:`zipit`,
  :mod:`otfusion`;
* :mod:`taskpool` (the fine-tuned digits tasks), :mod:`merging` (the benchmark over them);
* :mod:`registry` — :data:`METHODS`, every method with its paper and entry point.

Submodules are imported on demand: ``from lfmlab.reuse import ties``.
"""

__all__ = ["METHODS"]


def __getattr__(name: str):
    """``lfmlab.reuse.METHODS``: the area's registry, imported on first use (the submodules stay on demand)."""
    if name == "METHODS":
        from lfmlab.reuse.registry import METHODS

        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
