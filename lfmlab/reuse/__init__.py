"""Model reuse (survey §4): ensembles, weight interpolation, task arithmetic, mode connectivity
and merging by optimisation. Operators work on state dicts (see :mod:`lfmlab.core.state`).
Submodules are imported on demand: ``from lfmlab.reuse import ties``."""
