"""LoraHub (lfmlab.reuse.lorahub): element-wise composition (eq. 1), the gradient-free search, inputs."""
from __future__ import annotations

import lfmlab  # noqa: F401

# isort: split
import numpy as np
import pytest
import torch

from lfmlab import validate
from lfmlab.reuse import lorahub
from lfmlab.zoo.lora import add_lora, lora_modules


@pytest.fixture(scope="module")
def world_lm():
    from lfmlab import zoo

    card = zoo.load("world-lm", device="cpu")
    return card.model, card.tokenizer


def _random_module(model, seed):
    g = torch.Generator().manual_seed(seed)
    net = add_lora(model, rank=2)
    return {n: (torch.randn(m.lora_A.shape, generator=g) * 0.1, torch.randn(m.lora_B.shape, generator=g) * 0.1)
            for n, m in lora_modules(net).items()}


def test_compose_mixes_the_factors_not_the_products(world_lm):
    model, _ = world_lm
    m1, m2 = _random_module(model, 1), _random_module(model, 2)
    hub = lorahub.compose(add_lora(model, rank=2), [m1, m2], [0.5, -1.0])
    name, layer = next(iter(lora_modules(hub).items()))
    A = 0.5 * m1[name][0] - 1.0 * m2[name][0]
    B = 0.5 * m1[name][1] - 1.0 * m2[name][1]
    assert torch.allclose(layer.lora_A, A) and torch.allclose(layer.lora_B, B)
    # ΔW of the mix has cross terms: it is not the mix of the two ΔW's
    mix_of_products = 0.5 * m1[name][1] @ m1[name][0] - 1.0 * m2[name][1] @ m2[name][0]
    assert not torch.allclose(layer.lora_B @ layer.lora_A, mix_of_products, atol=1e-6)
    # weight 1 on one module and 0 on the rest gives that module exactly
    one = lorahub.compose(add_lora(model, rank=2), [m1, m2], [1.0, 0.0])
    assert torch.equal(lora_modules(one)[name].lora_A, m1[name][0])


def test_mixed_returns_a_plain_model_and_zero_weights_are_the_base(world_lm):
    model, tok = world_lm
    m1 = _random_module(model, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    zero = lorahub.mixed(model, [m1], [0.0])
    assert not lora_modules(zero)
    assert all(torch.allclose(v, zero.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_search_finds_the_useful_module_among_distractors(world_lm):
    """One module trained on the task, two random ones: LoraHub's weights favour the trained one
    and its loss on the examples drops below the base model's."""
    from lfmlab.core.lm import pair_batch
    from lfmlab.data import world

    model, tok = world_lm
    w = world.load()
    facts = w.facts_of("capital", split="train")[:40]
    prompts = [f"Q: {w.question(f.subject, f.relation)} A:" for f in facts]
    targets = [f.object for f in facts]
    useful = lorahub.train_module(model, tok, prompts[8:], targets[8:], rank=2, steps=40, seed=0)
    hub = [_random_module(model, 5), useful, _random_module(model, 6)]
    r = lorahub.lorahub(model, tok, hub, prompts[:8], targets[:8],
                        lorahub.LoraHubConfig(generations=12, popsize=8), show=False)
    batch = pair_batch(tok, prompts[:8], targets[:8], torch.device("cpu"))
    with torch.no_grad():
        assert float(lorahub.example_loss(r.model, batch)) < 0.8 * float(lorahub.example_loss(model, batch))
    assert abs(r.weights[1]) > max(abs(r.weights[0]), abs(r.weights[2]))
    assert r.evaluations == 12 * 8 and len(r.curve) == 12 and np.all(np.abs(r.weights) <= 1.5 + 1e-9)


def test_bad_input_says_what_to_fix(world_lm):
    model, tok = world_lm
    with pytest.raises(validate.BadValue, match="generations"):
        lorahub.LoraHubConfig(generations=0)
    with pytest.raises(validate.BadValue, match="l1"):
        lorahub.LoraHubConfig(l1=-1)
    with pytest.raises(ValueError, match="hub is empty"):
        lorahub.lorahub(model, tok, [], ["Q: x A:"], ["y"])
    m1 = _random_module(model, 1)
    with pytest.raises(ValueError, match="finite weights"):
        lorahub.mixed(model, [m1], [float("nan")])
    with pytest.raises(ValueError, match="as many targets"):
        lorahub.train_module(model, tok, ["Q: a A:"], [])
