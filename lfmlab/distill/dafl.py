"""DAFL: Data-Free Learning of student networks (Chen et al., ICCV 2019; survey §3.2, [115]).

Generative reconstruction (survey eq. 5): instead of optimising each image, train a
generator G(z) once, with the fixed teacher T in the role of a GAN's discriminator. DAFL's
three losses on a batch x = G(z) (survey eq. 6; the paper's α = 0.1, β = 5 on MNIST)::

    L_G = L_oh + α L_a + β L_ie
    L_oh = CE(T(x), argmax T(x))           one-hot: every image should be *some* class, confidently
    L_a  = -mean |f_T(x)|                  activation: real images excite the teacher's features more than noise
    L_ie = -H( (1/N) Σ_i softmax T(x_i) )  information entropy: all classes equally often in a batch

The survey's eq. 6 writes the entropy term per image; in the paper it is the entropy of the
*batch-mean* prediction that is maximised (balance across classes), while L_oh already makes
each single prediction confident. Each iteration takes one generator step, then the student
takes one KD step on fresh images from G (:func:`lfmlab.distill.common.generator_kd`).

Differences from the reference code (huawei-noah DAFL): the information entropy uses the natural
log, the reference log10, so the same β weighs it 2.3x more here; the student learns by Hinton
KD at τ = 4 on a fresh generator batch, as every generator method of this package does (the
reference's student loss and batch differ).

>>> r = dafl(teacher, student, DAFLConfig(iterations=1500), test=(d.test.x, d.test.y))
>>> r.images, r.labels          # 100 images from the trained generator, the teacher's labels
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from lfmlab.distill.common import (
    Callback,
    DistillResult,
    Generator,
    WeightedConfig,
    Weights,
    generator_kd,
)

__all__ = ["DAFLConfig", "dafl", "WEIGHTS"]

WEIGHTS = Weights(ce=1.0, activation=0.1, entropy=5.0)
TERMS = ("ce", "bn", "tv", "l2", "activation", "entropy")


@dataclass
class DAFLConfig(WeightedConfig):
    iterations: int = 1500         # generator steps = student steps
    batch_size: int = 128
    lr_g: float = 1e-2
    lr_s: float = 3e-3
    temperature: float = 4.0       # of the student's KD loss
    z_dim: int = 32
    width: int = 32
    weights: Weights = field(default_factory=lambda: copy.copy(WEIGHTS))
    eval_every: int = 50



def dafl(teacher: nn.Module, student: nn.Module, config: DAFLConfig | None = None,
         test: tuple[torch.Tensor, torch.Tensor] | None = None, generator: torch.Generator | None = None,
         callback: Callback | None = None) -> DistillResult:
    """Train G with L_G and the student with KD on G's images, alternating. ``result.generator``
    is the trained G. Teacher and student are unchanged on return."""
    cfg = config or DAFLConfig()
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Generator(cfg.z_dim, cfg.width)
    return generator_kd(teacher, student, net, cfg.weights, iterations=cfg.iterations, g_steps=1, s_steps=1,
                        batch_size=cfg.batch_size, lr_g=cfg.lr_g, lr_s=cfg.lr_s, student_loss="kd",
                        temperature=cfg.temperature, test=test, generator=generator, callback=callback,
                        eval_every=cfg.eval_every, method="DAFL")
