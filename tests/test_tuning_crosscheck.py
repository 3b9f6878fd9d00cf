"""Cross-checks against peft (a dev dependency): given identical weights, lfmlab's LoRA, (IA)³, prefix
tuning, prompt tuning and P-tuning compute the same logits as peft's, on GPT-2, GPT-NeoX and
Llama layouts."""
import copy

import pytest
import torch

peft = pytest.importorskip("peft")

from lfmlab.tuning import ia3, lora, prefix, prompt, ptuning  # noqa: E402
from lfmlab.zoo import hub  # noqa: E402

ARCHS = ["gpt2", "gpt_neox", "llama"]


def _batch(seed=0, B=3, T=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1000, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # a right-padded row
    return ids, mask


def _real(logits, mask):
    return logits[mask.bool()]  # compare real (non-pad) positions only


def _peft_lora_twin(model, mods, arch, **options):
    """peft's LoRA on a copy of ``model`` with the same targets and the same A, B (and DoRA's m)."""
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(mods), lora_dropout=0.0,
                          fan_in_fan_out=(arch == "gpt2"), **options)
    ref = peft.get_peft_model(copy.deepcopy(model), cfg).eval()
    for name, m in mods.items():
        layer = ref.base_model.model.get_submodule(name)
        layer.lora_A["default"].weight.data.copy_(m.lora_A.data)
        layer.lora_B["default"].weight.data.copy_(m.lora_B.data)
        if hasattr(m, "magnitude"):
            layer.lora_magnitude_vector["default"].weight.data.copy_(m.magnitude.data)
    return ref


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_matches_peft(arch):
    model = hub.random_model(arch, seed=1)
    ours = lora.add_lora(model, rank=4, alpha=8, targets="attn", seed=0)
    mods = lora.lora_modules(ours)
    torch.manual_seed(5)
    for m in mods.values():  # B = 0 at init: make the update non-trivial
        m.lora_B.data.normal_(0, 0.1)
    ref = _peft_lora_twin(model, mods, arch)
    ids, mask = _batch()
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (_real(a, mask) - _real(base, mask)).abs().max() > 1e-3  # the update does something
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)
    # and merging agrees with peft's merge_and_unload
    with torch.no_grad():
        c = lora.merge_and_unload(ours)(input_ids=ids, attention_mask=mask).logits
        d = ref.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(_real(c, mask), _real(d, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("reparam", [False, True])
def test_prefix_tuning_matches_peft(arch, reparam):
    model = hub.random_model(arch, seed=2)
    ours = prefix.add_prefix(model, n_prefix=5, reparam=reparam, hidden=32, seed=0)
    if reparam:  # peft's default init is not ours; give both the same non-trivial weights
        torch.manual_seed(3)
        for p in ours.parameters():
            if p.requires_grad:
                p.data.normal_(0, 0.3)
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5, prefix_projection=reparam,
                                  encoder_hidden_size=32)
    ref = peft.get_peft_model(copy.deepcopy(model), cfg).eval()
    enc = ref.prompt_encoder["default"]
    enc.embedding.weight.data.copy_(ours.embedding.weight.data)
    if reparam:
        enc.transform.load_state_dict(ours.transform.state_dict())
    ids, mask = _batch(1)
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (_real(a, mask) - _real(base, mask)).abs().max() > 1e-3  # the prefix does something
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_tuning_matches_peft(arch):
    model = hub.random_model(arch, seed=3)
    ours = prompt.add_prompt(model, n_tokens=6, init="vocab", seed=0)
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6, prompt_tuning_init="RANDOM")
    ref = peft.get_peft_model(copy.deepcopy(model), cfg).eval()
    ref.prompt_encoder["default"].embedding.weight.data.copy_(ours.source.weight.data)
    ids, mask = _batch(2)
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits[:, 6:]  # peft keeps the virtual positions
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (_real(a, mask) - _real(base, mask)).abs().max() > 1e-3
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "lstm"])
def test_ptuning_encoder_matches_peft(kind):
    model = hub.random_model("gpt2", seed=4)
    ours = ptuning.add_ptuning(model, n_tokens=4, hidden=16, kind=kind, seed=0)
    cfg = peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, encoder_hidden_size=16,
                                   encoder_reparameterization_type=kind.upper(), encoder_dropout=0.0)
    ref = peft.get_peft_model(copy.deepcopy(model), cfg).eval()
    ref.prompt_encoder["default"].load_state_dict(ours.source.state_dict())
    ids, mask = _batch(3)
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits[:, 4:]
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_matches_peft(arch):
    """(IA)³ on the keys, values and MLP input: the same logits as peft's IA3 given the same vectors.
    peft scales a fused q/k/v projection's whole output, so its query entries are held at 1."""
    model = hub.random_model(arch, seed=2)
    ours = ia3.add_ia3(model)
    mods = ia3.ia3_modules(ours)
    torch.manual_seed(7)
    for m in mods.values():                                 # 1 at init: make the scaling non-trivial
        m.ia3_l.data.uniform_(0.5, 1.5)
    ff = [n for n, m in mods.items() if m.where == "in"]
    cfg = peft.IA3Config(target_modules=list(mods), feedforward_modules=ff, fan_in_fan_out=(arch == "gpt2"))
    ref = peft.get_peft_model(copy.deepcopy(model), cfg).eval()
    for name, m in mods.items():
        vec = ref.base_model.model.get_submodule(name).ia3_l["default"]
        vec.data.copy_(m.scale().detach().reshape(vec.shape))
    ids, mask = _batch()
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
        base = model(input_ids=ids, attention_mask=mask).logits
        merged = ia3.merge_and_unload(ours)(input_ids=ids, attention_mask=mask).logits
    assert (_real(a, mask) - _real(base, mask)).abs().max() > 1e-3
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_real(merged, mask), _real(a, mask), atol=1e-5, rtol=1e-5)
    assert not ia3.ia3_modules(ia3.merge_and_unload(ours))   # the deployed model has the base layout


@pytest.mark.parametrize("arch", ARCHS)
def test_ia3_starts_at_the_model_and_never_scales_queries(arch):
    model = hub.random_model(arch, seed=3)
    ours = ia3.add_ia3(model)
    ids, mask = _batch()
    with torch.no_grad():
        torch.testing.assert_close(_real(ours(input_ids=ids, attention_mask=mask).logits, mask),
                                   _real(model(input_ids=ids, attention_mask=mask).logits, mask))
    fused = [m for m in ia3.ia3_modules(ours).values() if m.index is not None]
    for m in fused:                                        # 2/3 of a fused projection: keys and values
        assert len(m.index) * 3 == m.d_out * 2
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("ia3_l") for n in trainable)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["rslora", "dora"])
def test_rslora_and_dora_match_peft(arch, kind):
    """rsLoRA (α/√r) and DoRA (magnitude and direction) against peft's use_rslora / use_dora,
    given identical factors and magnitudes; and DoRA's merged model equals its unmerged one."""
    from lfmlab.tuning import dora

    model = hub.random_model(arch, seed=4)
    add = dora.add_dora if kind == "dora" else lora.add_lora
    ours = add(model, rank=4, alpha=8, targets="attn", seed=0, rslora=(kind == "rslora"))
    mods = lora.lora_modules(ours)
    torch.manual_seed(6)
    for m in mods.values():
        m.lora_B.data.normal_(0, 0.1)
        if kind == "dora":
            m.magnitude.data.mul_(torch.empty_like(m.magnitude).uniform_(0.8, 1.2))
    ref = _peft_lora_twin(model, mods, arch, use_rslora=(kind == "rslora"), use_dora=(kind == "dora"))
    ids, mask = _batch()
    with torch.no_grad():
        a = ours(input_ids=ids, attention_mask=mask).logits
        b = ref(input_ids=ids, attention_mask=mask).logits
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (_real(a, mask) - _real(base, mask)).abs().max() > 1e-3
    torch.testing.assert_close(_real(a, mask), _real(b, mask), atol=1e-5, rtol=1e-5)
    if kind == "dora":
        with torch.no_grad():
            merged = dora.merge_and_unload(ours)(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(_real(merged, mask), _real(a, mask), atol=1e-5, rtol=1e-5)
        assert not dora.dora_modules(dora.merge_and_unload(ours))
