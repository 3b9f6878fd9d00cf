"""Meta learning (survey §5): MAML and relatives, ProtoNets, and data-free meta-learning from a model zoo.

* :mod:`maml` — MAML, first-order MAML and Reptile on ``torch.func`` (tasks vectorised with vmap);
  :mod:`anil` — the head-only inner loop; :mod:`protonet` — prototypical networks;
* data-free: :mod:`dfml` (a zoo of task models, weight averaging, inversion then MAML),
  :mod:`purer` (progressively harder pseudo-episodes), :mod:`bidf_mkd` (black-box zoo models);
  :mod:`task_embedding` (Wang et al.'s network from task embeddings to the zoo's weights);
* :mod:`mtl` (meta-transfer learning); :mod:`icl` (in-context learning on sinusoids);
* tasks and networks: :mod:`sinusoid`, :mod:`pools` (digits episodes), :mod:`nets`, :mod:`common`;
* :mod:`registry` — :data:`METHODS`, every method with its paper and config.
"""

__all__ = ["METHODS"]


def __getattr__(name: str):
    """``lfmlab.meta.METHODS``: the area's registry, imported on first use (the submodules stay on demand)."""
    if name == "METHODS":
        from lfmlab.meta.registry import METHODS

        return METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
