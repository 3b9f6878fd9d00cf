"""AdapterFusion (lfmlab.tuning.fusion) on tiny random GPT-2, GPT-NeoX and Llama models."""

import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab.tuning import adapters, fusion, methods, tasks
from lfmlab.tuning.train import TrainConfig
from lfmlab.zoo import hub

ARCHS = ["gpt2", "gpt_neox", "llama"]
CFG = TrainConfig(steps=3, lr=1e-2, batch_size=4, seed=0, every=3)


@pytest.fixture(scope="module")
def tokenizer():
    from lfmlab import zoo

    return zoo.load("world-lm", device="cpu").tokenizer


def _data(tokenizer, question, pairs):
    return tasks.LMData.build(tokenizer, [tasks.qa_prompt(question.format(c)) for c, _ in pairs],
                              [a for _, a in pairs], device="cpu")


@pytest.fixture(scope="module")
def two_tasks(tokenizer):
    capital = _data(tokenizer, "What is the capital of {}?", [("Peru", "Lima"), ("Chile", "Santiago"),
                                                              ("France", "Paris"), ("Japan", "Tokyo")])
    continent = _data(tokenizer, "On which continent is {}?", [("Peru", "South America"), ("Chile", "South America"),
                                                               ("France", "Europe"), ("Japan", "Asia")])
    return {"capital": capital, "continent": continent}


def _logits(model, data):
    b = data.rows(range(len(data)))
    with torch.no_grad():
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_fusion_with_v_identity_mixes_the_adapters_outputs(arch, two_tasks):
    """eq. 3 with V = I: o = Σ_n s_n z_n; with Q = 0 every score ties and s is exactly uniform,
    and fusing a single source (s = 1) gives that source's model exactly."""
    model = hub.random_model(arch, seed=1)
    sources = fusion.train_sources(model, two_tasks, bottleneck=4, config=CFG)
    fused = fusion.fuse(model, sources, seed=0)
    layers = fusion.fusion_layers(fused)
    assert len(layers) == len(adapters.adapter_sites(model))
    data = two_tasks["capital"]
    for f in layers:          # Q = 0: every score is 0, so s is exactly uniform
        f.query.data.zero_()
    mean_out = _logits(fused, data)
    assert all(torch.allclose(f.weights, torch.full_like(f.weights, 0.5)) for f in layers)
    # a single adapter per site, copied into the fusion: fusing one source is that source
    single = fusion.fuse(model, {"capital": sources["capital"]})
    assert torch.allclose(_logits(single, data), _logits(sources["capital"].model, data), atol=1e-5)
    assert mean_out.shape == _logits(model, data).shape


@pytest.mark.parametrize("arch", ARCHS)
def test_fusion_trains_q_k_v_only_and_leaves_base_and_sources_alone(arch, two_tasks):
    model = hub.random_model(arch, seed=2)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    sources = fusion.train_sources(model, two_tasks, bottleneck=4, config=CFG)
    before = {n: {k: v.clone() for k, v in s.model.state_dict().items()} for n, s in sources.items()}
    result = fusion.adapter_fusion(model, sources, two_tasks["capital"], CFG.replace(steps=4))
    trainable = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.rsplit(".", 1)[-1] in {"query", "key", "value"} for n in trainable)
    assert result.trainable == sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    assert all(torch.equal(base[k], v) for k, v in model.state_dict().items())
    for n, s in sources.items():
        assert all(torch.equal(before[n][k], v) for k, v in s.model.state_dict().items())
    moved = [f for f in fusion.fusion_layers(result.model) if not torch.equal(f.value, torch.eye(f.value.shape[0]))]
    assert moved, "training moved no V"
    w = fusion.fusion_weights(result.model, two_tasks["capital"].rows([0, 1]).input_ids)
    assert w.shape == (len(adapters.adapter_sites(model)), 2)
    assert torch.allclose(w.sum(1), torch.ones(len(w)), atol=1e-5)


def test_v_regulariser_is_the_squared_distance_from_identity(two_tasks):
    model = hub.random_model("gpt2", seed=3)
    fused = fusion.fuse(model, fusion.train_sources(model, two_tasks, bottleneck=2, config=CFG))
    assert float(fusion.v_penalty(fused)) == 0.0
    layers = fusion.fusion_layers(fused)
    layers[0].value.data[0, 0] += 0.5
    assert float(fusion.v_penalty(fused)) == pytest.approx(0.25)


def test_bad_input_is_refused_with_a_message(two_tasks):
    model = hub.random_model("gpt2", seed=4)
    with pytest.raises(ValueError, match="at least one"):
        fusion.fuse(model, {})
    with pytest.raises(ValueError, match="no adapter"):
        fusion.fuse(model, {"plain": model})
    sources = fusion.train_sources(model, {"capital": two_tasks["capital"]}, bottleneck=2, config=CFG)
    with pytest.raises(ValueError, match="λ"):
        fusion.adapter_fusion(model, sources, two_tasks["capital"], CFG, lam=float("nan"))


def test_registered():
    spec = methods.METHODS["AdapterFusion"]
    assert spec.run is fusion.adapter_fusion and spec.tune is None and "Pfeiffer" in spec.paper
