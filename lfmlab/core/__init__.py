"""The core floor: what the method areas share, beneath all of them.

* :mod:`hooks` — forward hooks as context managers (read or rewrite a module's output, stop a pass).
* :mod:`lm` — causal-LM helpers: padding, answer log-probabilities, greedy decoding, split batches.
* :mod:`params` — eval mode and freezing restored on exit, trainable and frozen copies, counts, device.
* :mod:`state` — state-dict algebra: task vectors, weighted sums, interpolation, flatten and swap.
* :mod:`schedules` — learning-rate schedules (cosine, with optional warm-up).
* :mod:`lmtrain` — causal-LM training primitives: pack documents into rows, one epoch of next-token loss.
* :mod:`inversion` — model inversion: synthesise inputs a frozen classifier assigns to given classes.

A method area (``tuning``, ``retrieval``, ``distill``, ``reuse``, ``meta``, ``editing``) imports this
floor, :mod:`lfmlab.zoo`, :mod:`lfmlab.data` and itself, never another area and never :mod:`lfmlab.ui`;
``tests/test_house.py`` checks it.
"""
