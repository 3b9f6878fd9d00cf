"""Model distillation (survey §3): learn a model from another model, without its training data.

* :mod:`kd` — knowledge distillation (Hinton et al. 2015) from a pool or a sampler, and the
  baselines: real data, Gaussian noise, the student on real labels;
* synthesis by optimisation: :mod:`deepinversion` (DeepDream prior, DeepInversion),
  :mod:`adaptive_di` (Adaptive DeepInversion), :mod:`zskd` (data impressions);
* synthesis by a generator: :mod:`dafl`, :mod:`adversarial` (ZSKT, DFAD), :mod:`fast` (a
  meta-learned generator, Fast-DFKD);
* :mod:`lm` — distilling a causal LM through a black-box text API;
* :mod:`common` — the loss terms, the generator and the evaluator they share; model inversion
  itself is in the core floor (:mod:`lfmlab.core.inversion`);
* :mod:`registry` — :data:`METHODS`, every method with its paper and config (the panel reads it).
"""

__all__ = ["METHODS"]


def __getattr__(name: str):
    """``lfmlab.distill.METHODS``: the area's registry, imported on first use (the submodules stay on demand)."""
    if name == "METHODS":
        from lfmlab.distill.registry import METHODS

        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
