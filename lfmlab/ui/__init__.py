"""The widget layer: panels (traitlets model + ipywidgets view), plots and the notebook kit.

* :mod:`panel` — the panel pattern (state, view, ``run()``/``demo()``, refusals of bad input);
* one panel module per area: :mod:`tuning`, :mod:`retrieval`, :mod:`distillation`, :mod:`merging`,
  :mod:`meta`, :mod:`editing`, and :mod:`probe` (next-token probe of any LM);
* :mod:`plots` — the recurring figures; :mod:`kit` — tables and timing for the notebooks.

It calls the method layer; nothing below it imports it. Progress bars are :mod:`lfmlab.progress`.
"""
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.probe import ProbePanel

__all__ = ["Panel", "BadInput", "ProbePanel"]
