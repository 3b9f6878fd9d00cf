"""Exercises of notebook 06 (meta learning): ProtoNet's prototypes and distances, and MAML's
meta-gradient with torch.func."""
from __future__ import annotations

import torch
from torch import nn
from torch.func import grad

from lfmlab.exercises.core import Exercise

SECTION = "06"


def proto_reference(support, support_y, query, n_way):
    from lfmlab.meta.protonet import prototypes

    c = prototypes(support[None], support_y[None], n_way)[0]
    return -torch.cdist(query[None], c[None])[0].pow(2)


class _Linear(nn.Module):
    """f_θ(x) = x @ θ["w"] + θ["b"], the model of the MAML exercise."""

    def __init__(self, d: int):
        super().__init__()
        self.w, self.b = nn.Parameter(torch.zeros(d, 1)), nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x @ self.w + self.b


def maml_reference(params, support_x, support_y, query_x, query_y, lr):
    from lfmlab.meta import maml
    from lfmlab.meta.common import mse

    tasks = (support_x[None], support_y[None], query_x[None], query_y[None])
    _, g = maml.meta_gradient(_Linear(params["w"].shape[0]), dict(params), tasks, mse, steps=1, lr=lr)
    return g


def _proto_cases():
    for seed, (n_way, shots, q, d) in enumerate([(3, 2, 5, 4), (5, 1, 6, 3), (2, 5, 3, 8)]):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n_way).repeat(shots)
        yield dict(support=torch.randn(n_way * shots, d, generator=g), support_y=y[torch.randperm(len(y), generator=g)],
                   query=torch.randn(q, d, generator=g), n_way=n_way)


def _maml_cases():
    for seed, (d, s, q, lr) in enumerate([(3, 5, 7, 0.1), (2, 4, 4, 0.3), (4, 10, 6, 0.05)]):
        g = torch.Generator().manual_seed(seed)
        params = {"w": torch.randn(d, 1, generator=g), "b": torch.randn(1, generator=g)}
        yield dict(params=params, support_x=torch.randn(s, d, generator=g), support_y=torch.randn(s, 1, generator=g),
                   query_x=torch.randn(q, d, generator=g), query_y=torch.randn(q, 1, generator=g), lr=lr)


def _proto_wrong(support, support_y, query, n_way, square=True, sign=-1.0, mean=True):
    onehot = torch.nn.functional.one_hot(support_y, n_way).float()          # [S, n_way]
    c = onehot.T @ support / (onehot.sum(0)[:, None] if mean else 1.0)
    d = torch.cdist(query, c)
    return sign * (d ** 2 if square else d)


def _maml_wrong(params, support_x, support_y, query_x, query_y, lr, order=2, step=-1.0, inner="support"):
    def loss(p, x, y):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    def outer(p):
        ix, iy = (support_x, support_y) if inner == "support" else (query_x, query_y)
        g = grad(loss)(p, ix, iy)
        if order == 1:
            g = {k: v.detach() for k, v in g.items()}
        fast = {k: p[k] + step * lr * g[k] for k in p}
        return loss(fast, query_x, query_y)

    return grad(outer)(params)


PROTO = Exercise(
    name="proto_logits", section=SECTION, title="ProtoNet: prototypes and distances", difficulty=1,
    minutes=10,
    equation=r"c_k = \frac{1}{|S_k|}\sum_{(x_i, y_i) \in S_k} f_\phi(x_i),\qquad "
             r"\mathrm{logit}_k(x) = -\|f_\phi(x) - c_k\|^2",
    stub='''def proto_logits(support, support_y, query, n_way):
    """Prototypical networks (Snell et al. 2017, eqs. 1-2) in embedding space.

    support [S, D]: embedded support examples; support_y [S] (long) in 0 .. n_way-1; query [Q, D]:
    embedded queries. Each class's prototype is the mean of its support embeddings; a query's logit
    for class k is minus its squared Euclidean distance to prototype k. Returns [Q, n_way].
    """
''',
    body='''    onehot = F.one_hot(support_y, n_way).to(support.dtype)             # [S, n_way]
    protos = onehot.T @ support / onehot.sum(0)[:, None]               # [n_way, D]
    return -torch.cdist(query, protos) ** 2
''',
    hints=("One-hot the labels: onehot.T @ support sums each class's embeddings; divide by the "
           "class counts for the mean.",
           "torch.cdist(query, protos) gives Euclidean distances [Q, n_way]; the logits are minus "
           "their squares."),
    reference=proto_reference, cases=_proto_cases,
    mistakes={
        "the distances are not squared: ProtoNet's logits are −‖f(x) − c_k‖²":
            lambda **kw: _proto_wrong(**kw, square=False),
        "the sign: the logits are minus the squared distances, so the nearest prototype wins":
            lambda **kw: _proto_wrong(**kw, sign=1.0),
        "prototypes as sums: c_k is the mean of class k's support embeddings":
            lambda **kw: _proto_wrong(**kw, mean=False),
    },
)

MAML = Exercise(
    name="maml_meta_gradient", section=SECTION, title="MAML's inner step and meta-gradient", difficulty=3,
    minutes=25,
    equation=r"\theta' = \theta - \alpha \nabla_\theta \mathcal{L}_{S}(f_\theta),\qquad "
             r"g = \nabla_\theta\, \mathcal{L}_{Q}(f_{\theta'})",
    stub='''def maml_meta_gradient(params, support_x, support_y, query_x, query_y, lr):
    """MAML (Finn et al. 2017, eqs. 1-2) for one task, one inner step, with torch.func.

    The model is f_θ(x) = x @ θ["w"] + θ["b"] (w [D, 1], b [1]) and the loss the mean squared
    error. Adapt on the support set, θ' = θ − lr ∇_θ L_support(θ); return the meta-gradient
    ∇_θ L_query(θ') as a dict like params: the exact (second-order) gradient, through the inner
    step.
    """
''',
    body='''    def loss(p, x, y):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    def query_loss_after_step(p):
        g = grad(loss)(p, support_x, support_y)                 # stays differentiable in p
        fast = {k: p[k] - lr * g[k] for k in p}
        return loss(fast, query_x, query_y)

    return grad(query_loss_after_step)(params)
''',
    hints=("Write loss(p, x, y); torch.func.grad(loss)(p, x, y) returns a dict of gradients.",
           "Put the inner step inside the function you differentiate: grad(lambda p: "
           "loss(p − lr·grad(loss)(p, support), query))(params). torch.func keeps the inner gradient "
           "differentiable."),
    reference=maml_reference, cases=_maml_cases,
    mistakes={
        "first-order: the inner gradient was detached, so the meta-gradient misses the Hessian term; "
        "MAML differentiates through the inner step (do not detach inside the function you grad)":
            lambda **kw: _maml_wrong(**kw, order=1),
        "the inner step climbs the loss: θ' = θ − α ∇L":
            lambda **kw: _maml_wrong(**kw, step=1.0),
        "the inner step used the query set; adapt on the support set, score on the query set":
            lambda **kw: _maml_wrong(**kw, inner="query"),
    },
)

def reptile_reference(params, x, y, lr, steps):
    from lfmlab.meta import maml
    from lfmlab.meta.common import mse

    half = x.shape[0] // 2                      # Reptile trains on the whole task: support and query
    tasks = (x[None, :half], y[None, :half], x[None, half:], y[None, half:])
    _, g = maml.meta_gradient(_Linear(params["w"].shape[0]), dict(params), tasks, mse, steps=steps, lr=lr,
                              algorithm="reptile")
    return g


def _reptile_cases():
    for seed, (d, n, lr, steps) in enumerate([(3, 8, 0.05, 5), (2, 6, 0.1, 3), (4, 10, 0.02, 8)]):
        g = torch.Generator().manual_seed(seed)
        yield dict(params={"w": torch.randn(d, 1, generator=g), "b": torch.randn(1, generator=g)},
                   x=torch.randn(n, d, generator=g), y=torch.randn(n, 1, generator=g), lr=lr, steps=steps)


def _reptile_wrong(params, x, y, lr, steps, sign=1.0, frozen=False, n=None):
    def loss(p):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    phi = dict(params)
    for _ in range(steps if n is None else n):
        g = grad(loss)(params if frozen else phi)
        phi = {k: phi[k] - lr * g[k] for k in phi}
    return {k: sign * (params[k] - phi[k]) for k in params}


REPTILE = Exercise(
    name="reptile_direction", section=SECTION, title="Reptile's update direction", difficulty=2,
    minutes=12,
    equation=r"\phi = \mathrm{SGD}_k(\theta;\, \mathcal{L}_\tau),\qquad "
             r"\theta \leftarrow \theta - \epsilon\,(\theta - \phi)",
    stub='''def reptile_direction(params, x, y, lr, steps):
    """Reptile (Nichol et al. 2018, Algorithm 1) on one task: k = steps plain SGD steps from θ on
    the task's data (x [N, D], y [N, 1]; the model f_θ(x) = x @ θ["w"] + θ["b"], the mean squared
    error, the learning rate lr) give φ. Returns θ − φ as a dict like params: the direction the
    outer update moves θ against (θ ← θ − ε (θ − φ)).
    """
''',
    body='''    def loss(p):
        return ((x @ p["w"] + p["b"] - y) ** 2).mean()

    phi = dict(params)
    for _ in range(steps):
        g = grad(loss)(phi)                                  # the gradient at the current φ
        phi = {k: phi[k] - lr * g[k] for k in phi}
    return {k: params[k] - phi[k] for k in params}
''',
    hints=("torch.func.grad(loss)(phi) gives a dict of gradients; update every entry of phi with it.",
           "Take each step's gradient at the current φ (not at θ), k times; return θ − φ, not φ − θ."),
    reference=reptile_reference, cases=_reptile_cases,
    mistakes={
        "the sign: return θ − φ (the outer step θ − ε (θ − φ) then moves θ towards φ)":
            lambda **kw: _reptile_wrong(**kw, sign=-1.0),
        "every step's gradient was taken at θ; SGD takes each step's gradient at the current φ":
            lambda **kw: _reptile_wrong(**kw, frozen=True),
        "one SGD step only: Reptile takes k = steps steps (with one step it is just a scaled gradient)":
            lambda **kw: _reptile_wrong(**kw, n=1),
    },
)

EXERCISES = [PROTO, MAML, REPTILE]
