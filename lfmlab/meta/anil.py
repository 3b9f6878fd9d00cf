"""ANIL, "almost no inner loop": MAML whose inner loop adapts only the final linear head.

Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML", ICLR 2020. They found that a MAML-trained network hardly changes its
features in the inner loop: fast adaptation is *feature reuse*. ANIL makes that the algorithm:

* inner loop (head only):  w' = w - α ∇_w L^{support}(f_{θ_body, w})
* outer loop (everything): θ ← θ - β ∇_θ (1/T) Σ_i L_i^{query}(f_{θ_body, w'_i})

It is :func:`lfmlab.meta.maml.meta_train` with ``names`` = the head's parameters. The outer
gradient is still exact (second order through the head's inner steps), and much cheaper: the
Hessian is only over the head. Evaluate with the same ``names`` (``maml.adaptation(..., names=)``).
"""
from __future__ import annotations

from torch import nn

from lfmlab.meta import maml
from lfmlab.meta.common import Loss


def head_names(model: nn.Module) -> list[str]:
    """The parameters of the head: ``head.*`` when the model has a ``.head`` (the lfmlab
    convention), else the last ``nn.Linear``'s."""
    names = [n for n, _ in model.named_parameters()]
    head = [n for n in names if n.startswith("head.")]
    if head:
        return head
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("ANIL needs a final linear layer (a .head, or an nn.Linear) to adapt")
    return [n for n in names if n.rsplit(".", 1)[0] == linears[-1]]


def meta_train(model: nn.Module, sample: maml.Sampler, loss: Loss, config: maml.MAMLConfig | None = None,
               generator=None) -> maml.MetaResult:
    """Meta-train ``model`` (a copy) with ANIL: MAML with the inner loop on :func:`head_names` only."""
    return maml.meta_train(model, sample, loss, config, names=head_names(model), generator=generator,
                           desc="ANIL")
