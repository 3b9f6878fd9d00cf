"""Model tuning (survey §2.1–2.2): weight tuning and input engineering, from scratch.

One method per module, each readable beside its paper:

* weight tuning: :mod:`finetune` (all weights), :mod:`bitfit` (biases only), :mod:`wiseft`
  (weight-space interpolation), :mod:`adapters` (Houlsby bottlenecks, AdaMix), :mod:`lora`
  (low-rank updates, merged for zero inference overhead);
* input engineering: :mod:`prefix` (per-layer key/value prefixes), :mod:`prompt` (Lester soft
  prompts), :mod:`ptuning` (a prompt encoder), :mod:`bbt` (black-box tuning with CMA-ES),
  :mod:`instruct` (instruction tuning, zero-shot on a held-out relation);
* shared: :mod:`tasks` (the tasks built from real facts), :mod:`train` (one training loop, the
  result record, parameter counts and latency).

Every method takes a model and data and returns a :class:`~lfmlab.tuning.train.TuneResult`
holding a *new* model: the model it was given is never changed. Submodules are imported on
demand: ``from lfmlab.tuning import lora``.

* :mod:`methods` — the registry, :data:`METHODS`: every method with its size knob, learning rate and paper.
"""

__all__ = ["METHODS"]


def __getattr__(name: str):
    """``lfmlab.tuning.METHODS``: the area's registry, imported on first use (the submodules stay on demand)."""
    if name == "METHODS":
        from lfmlab.tuning.methods import METHODS

        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
