"""Unit tests of lfmlab.tuning's methods on tiny random GPT-2, GPT-NeoX and Llama models."""

import pytest
import torch

import lfmlab  # noqa: F401
from lfmlab.core.params import count
from lfmlab.tuning import (
    adapters,
    bbt,
    bitfit,
    finetune,
    lora,
    methods,
    prefix,
    prompt,
    ptuning,
    tasks,
    wiseft,
)
from lfmlab.tuning.train import TrainConfig
from lfmlab.zoo import hub

ARCHS = ["gpt2", "gpt_neox", "llama"]


@pytest.fixture(scope="module")
def world_lm():
    from lfmlab import zoo

    return zoo.load("world-lm", device="cpu")


@pytest.fixture(scope="module")
def tokenizer(world_lm):
    return world_lm.tokenizer


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """Eight (question, answer) pairs: small enough to memorise in a few dozen steps."""
    pairs = [("Peru", "Lima"), ("Chile", "Santiago"), ("France", "Paris"), ("Japan", "Tokyo"),
             ("Kenya", "Nairobi"), ("Egypt", "Cairo"), ("Spain", "Madrid"), ("Italy", "Rome")]
    return tasks.LMData.build(tokenizer, [tasks.qa_prompt(f"What is the capital of {c}?") for c, _ in pairs],
                              [a for _, a in pairs], device="cpu")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


def _logits(model, data):
    b = data.rows(range(len(data)))
    with torch.no_grad():
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[b.attention_mask.bool()]


CFG = TrainConfig(steps=30, batch_size=8, seed=0)


# ---- every method: learns, and never touches the model it was given ------------------------------------------

@pytest.mark.parametrize("name", [n for n in methods.tuners() if methods.METHODS[n].gradients])
def test_methods_learn_and_leave_the_input_model_alone(name, tiny, world_lm):
    model = world_lm.model
    before = _state(model)
    spec = methods.METHODS[name]
    result = methods.run(name, model, tiny, config=CFG.replace(steps=20, lr=spec.lr))
    assert _same(before, _state(model)), f"{name} changed the model it was given"
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.9 * first, f"{name}: loss {first:.3f} -> {last:.3f}"
    assert 0 < result.trainable <= count(model) and result.base == count(model)
    assert not spec.deploy(result).training


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_prefix_and_adapters_learn_on_every_layout(arch, tiny):
    """On a random model the logits start near uniform (loss ≈ ln 1024 ≈ 6.9): every method must
    move the loss clearly within 40 steps, through whatever modules the layout has."""
    model = hub.random_model(arch, seed=1)
    cfg = CFG.replace(steps=40, lr=3e-2)
    for result in (lora.lora(model, tiny, rank=4, config=cfg),
                   prefix.prefix_tuning(model, tiny, n_prefix=4, reparam=True, config=cfg),
                   adapters.adapter_tuning(model, tiny, bottleneck=4, config=cfg)):
        first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
        assert last < first - 0.25, (arch, result.method, first, last)


# ---- LoRA ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_lora_with_zero_B_is_the_base_model(arch, tiny):
    model = hub.random_model(arch, seed=2)
    wrapped = lora.add_lora(model, rank=4, targets="all")
    assert len(lora.lora_modules(wrapped)) == len(lora.linear_targets(model, "all")) > 0
    torch.testing.assert_close(_logits(wrapped, tiny), _logits(model, tiny), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_merge_unmerge_and_unload(arch, tiny):
    model = hub.random_model(arch, seed=3)
    wrapped = lora.add_lora(model, rank=4)
    torch.manual_seed(0)
    for m in lora.lora_modules(wrapped).values():
        m.lora_B.data.normal_(0, 0.05)
    base_w = _state(model)
    unmerged = _logits(wrapped, tiny)
    assert (unmerged - _logits(model, tiny)).abs().max() > 1e-3
    with lora.merged(wrapped):
        assert (_logits(wrapped, tiny) - unmerged).abs().max() < 1e-5
    plain = lora.merge_and_unload(wrapped)
    assert not lora.lora_modules(plain) and type(plain) is type(model)
    assert plain.state_dict().keys() == model.state_dict().keys()
    assert (_logits(plain, tiny) - unmerged).abs().max() < 1e-5
    # after unmerging, the wrapped base weights are the original ones again
    back = {k.replace(".base.", "."): v for k, v in wrapped.state_dict().items() if "lora_" not in k}
    assert _same(base_w, back, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_flops_see_the_unmerged_lora_and_the_adapters_but_not_the_merged_lora(arch, tiny):
    from lfmlab.tuning.train import flops, latency_ratios

    model = hub.random_model(arch, seed=3)
    wrapped = lora.add_lora(model, rank=4)
    with_adapters = adapters.add_adapters(model, bottleneck=8)
    one = tiny.rows([0])
    ids, mask = one.input_ids, one.attention_mask
    base = flops(model, ids, mask)
    assert base > 0 and flops(lora.merge_and_unload(wrapped), ids, mask) == base
    assert flops(wrapped, ids, mask) > base and flops(with_adapters, ids, mask) > base
    ratios = latency_ratios({"base": model, "again": model}, ids, mask, rounds=3, warmup=1, block=1)
    assert ratios["base"] == 1.0 and ratios["again"] > 0
    with pytest.raises(ValueError, match="reference"):
        latency_ratios({"base": model}, ids, mask, reference="tuned")


def test_latency_ratios_cancel_a_first_in_the_round_effect():
    """A model whose pass is slower whenever it runs first in a round (a cold cache) must still
    measure 1.0 against itself: ratios are taken over full rotations of the running order, and an
    even number of them has the mean of its two middle values as its median."""
    from lfmlab.tuning import train

    first_slow = [1.2, 1.0] * 15          # the model's seconds per round, alternating places
    other = [1.0, 1.2] * 15               # the same model under another name
    ratios = [a / b for a, b in zip(train._cycles(first_slow, 2), train._cycles(other, 2))]
    assert train._median(ratios) == pytest.approx(1.0)
    assert train._median([0.9, 1.1]) == pytest.approx(1.0) and train._median([3.0, 1.0, 2.0]) == 2.0
    assert train._cycles([1.0, 2.0, 3.0], 5) == [6.0]


def test_lora_targets_come_from_the_layout():
    assert lora.linear_targets(hub.random_model("gpt2"), "attn") == [
        f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj")]
    llama = lora.linear_targets(hub.random_model("llama"), "mlp")
    assert all(".mlp." in n for n in llama) and len(llama) == 2 * 3
    with pytest.raises(ValueError, match="where"):
        lora.linear_targets(hub.random_model("gpt2"), "everything")


# ---- adapters, AdaMix, BitFit --------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_adapters_start_as_the_identity(arch, tiny):
    model = hub.random_model(arch, seed=4)
    for experts in (1, 3):
        wrapped = adapters.add_adapters(model, bottleneck=4, experts=experts).eval()
        n_sites = sum(isinstance(m, adapters.WithAdapter) for m in wrapped.modules())
        assert n_sites == 2 * model.config.num_hidden_layers
        torch.testing.assert_close(_logits(wrapped, tiny), _logits(model, tiny), atol=1e-6, rtol=0)


def test_adamix_deploys_the_average_of_its_experts(tiny):
    model = hub.random_model("gpt2", seed=5)
    result = adapters.adamix(model, tiny, bottleneck=4, experts=3, config=CFG.replace(steps=20, lr=1e-2))
    mixture = result.info["mixture"].eval()
    mix = next(m for m in mixture.modules() if isinstance(m, adapters.MixAdapter))
    assert mix.up_w.shape[0] == 1  # one up-projection, shared by the experts (as in the reference)
    assert (mix.down_w[0] - mix.down_w[1]).abs().max() > 0  # experts were routed differently
    torch.testing.assert_close(_logits(result.model, tiny), _logits(mixture, tiny), atol=1e-5, rtol=1e-5)
    assert result.info["deployed_parameters"] < result.trainable  # one adapter at inference, M in training


def test_adamix_experts_start_identical_and_the_expectation_averages_routes(tiny):
    model = hub.random_model("gpt2", seed=5)
    fresh = adapters.add_adapters(model, bottleneck=4, experts=3)
    mix = next(m for m in fresh.modules() if isinstance(m, adapters.MixAdapter))
    assert torch.equal(mix.down_w[0], mix.down_w[1]) and torch.equal(mix.down_w[0], mix.down_w[2])
    # identical experts: every route computes the same function, so the expectation is the model
    with torch.no_grad():
        mix.up_w.normal_(0, 0.1)
    expected = adapters.mixture_model(fresh, samples=3)
    b = tiny.rows(range(4))
    got = expected(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.softmax(-1)
    want = fresh.eval()(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.softmax(-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert mix.stochastic is None  # routing mode restored


def test_bitfit_trains_biases_only(tiny):
    model = hub.random_model("gpt2", seed=6)
    result = bitfit.bitfit(model, tiny, CFG.replace(steps=5, lr=1e-2))
    before, after = model.state_dict(), result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(".bias") for k in changed)
    assert result.trainable == sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    with pytest.raises(ValueError, match="no bias"):
        bitfit.bitfit(hub.random_model("llama"), tiny, CFG)


# ---- prompts and prefixes ------------------------------------------------------------------------------------------

def test_soft_prompts_start_from_vocabulary_embeddings(tokenizer):
    model = hub.random_model("gpt2", seed=7)
    table = model.get_input_embeddings().weight
    p = prompt.init_prompt(model, 5, "vocab", seed=0)
    assert all((table == row).all(-1).any() for row in p)
    t = prompt.init_prompt(model, 4, "text", text="The capital", tokenizer=tokenizer)
    ids = tokenizer("The capital", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(t[: len(ids)], table[ids])
    with pytest.raises(ValueError):
        prompt.init_prompt(model, 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_baked_prompts_and_prefixes_compute_the_same(arch, tiny):
    model = hub.random_model(arch, seed=8)
    pre = prefix.add_prefix(model, n_prefix=3, reparam=True, hidden=16)
    torch.testing.assert_close(_logits(prefix.bake(pre), tiny), _logits(pre, tiny), atol=1e-5, rtol=1e-5)
    pt = ptuning.add_ptuning(model, n_tokens=3, hidden=16, kind="lstm")
    torch.testing.assert_close(_logits(ptuning.bake(pt), tiny), _logits(pt, tiny), atol=1e-5, rtol=1e-5)
    soft = prompt.add_prompt(model, n_tokens=3)
    assert _logits(soft, tiny).shape == _logits(model, tiny).shape  # logits aligned with the input


# ---- WiSE-FT ---------------------------------------------------------------------------------------------------------

def test_wiseft_interpolates_weights(tiny):
    zero = hub.random_model("gpt2", seed=9)
    tuned = finetune.finetune(zero, tiny, CFG.replace(steps=3, lr=1e-2)).model
    s0, s1 = _state(zero), _state(tuned)
    assert _same(wiseft.wise_ft(zero, tuned, 0.0).state_dict(), s0)
    assert _same(wiseft.wise_ft(zero, tuned, 1.0).state_dict(), s1, atol=1e-7)
    mid = wiseft.wise_ft(zero, tuned, 0.25).state_dict()
    k = "transformer.h.0.attn.c_attn.weight"
    torch.testing.assert_close(mid[k], 0.75 * s0[k] + 0.25 * s1[k])
    curve = wiseft.alpha_curve(zero, tuned, [0.0, 0.5, 1.0], {"loss": tiny.mean_loss})
    assert curve.scores["loss"][0] > curve.scores["loss"][-1] and curve.best("loss") in (0.0, 0.5)
    assert _same(s0, _state(zero)) and _same(s1, _state(tuned))
    with pytest.raises(ValueError):
        wiseft.wise_ft(zero, tuned, 1.5)


# ---- BBT -----------------------------------------------------------------------------------------


def test_population_is_scored_in_one_batched_call(tiny):
    model = prompt.add_prompt(hub.random_model("gpt2", seed=10), n_tokens=3).eval()
    prompts = torch.randn(5, 3, model.config.n_embd) * 0.02
    batch = tiny.rows(range(len(tiny)))
    counter = bbt.CallCounter(model.base)
    batched = bbt.population_losses(model, prompts, batch, batched=True)
    assert (counter.calls, counter.rows) == (1, 5 * len(tiny))
    single = bbt.population_losses(model, prompts, batch, batched=False)
    assert counter.calls == 1 + 5
    counter.close()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_bbt_improves_with_forward_passes_only(tiny):
    model = hub.random_model("gpt2", seed=11)
    for p in model.parameters():
        p.grad = None
    result = bbt.bbt(model, tiny, n_tokens=3, k=8, popsize=6, generations=12, examples=8, seed=0)
    info = result.info
    assert info["best_loss"] < info["initial_loss"]
    assert info["calls"] == 12 and info["sequences"] == 12 * 6 * 8
    assert all(p.grad is None and not p.requires_grad for p in result.model.parameters())
    assert all(p.grad is None for p in model.parameters())
    slow = bbt.bbt(model, tiny, n_tokens=3, k=8, popsize=6, generations=2, examples=8, seed=0, batched=False)
    assert slow.info["calls"] == 2 * 6


def test_random_search_matches_bbts_budget_and_subspace(tiny):
    model = hub.random_model("gpt2", seed=11)
    kw = dict(n_tokens=3, k=8, popsize=6, generations=5, examples=8, seed=0)
    b, r = bbt.bbt(model, tiny, **kw), bbt.random_search(model, tiny, **kw)
    for key in ("calls", "sequences", "evaluations", "initial_loss", "examples"):
        assert b.info[key] == r.info[key], key
    assert torch.equal(b.info["projection"].A, r.info["projection"].A)
    assert r.info["best_loss"] == min(r.losses)
    assert r.losses == sorted(r.losses, reverse=True)  # best so far never rises
    p0 = bbt.prompt_at(b)
    torch.testing.assert_close(p0.source.weight, b.info["projection"].p0)
    assert all(not p.requires_grad for p in r.model.parameters())


def test_null_training_with_lr_zero_moves_nothing(tiny):
    model = hub.random_model("gpt2", seed=12)
    result = finetune.finetune(model, tiny, CFG.replace(steps=3, lr=0.0))
    for (n, a), b in zip(model.state_dict().items(), result.model.state_dict().values()):
        assert torch.equal(a, b), n


def test_adding_trainable_modules_leaves_the_callers_random_state_alone():
    """Seeded initialisation must not reseed the global generator (re-running a cell stays honest)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50, n_positions=16))
    for add in (lambda: lora.add_lora(model, rank=2), lambda: adapters.add_adapters(model, 4),
                lambda: prefix.add_prefix(model, 3)):
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        add()
        assert torch.equal(torch.rand(3), expected)
