"""The fast paths compute what the plain ones do: split-batch forward passes (ROME, MEMIT),
forward passes stopped at a layer (key covariance, keys), answer-only BBT scoring."""
from __future__ import annotations

import pytest
import torch

from lfmlab.core import hooks, lm
from lfmlab.zoo import hub


def _rows(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([9, 5, 7, 3])
    ids = torch.randint(1, vocab, (4, 9), generator=g)
    mask = (torch.arange(9)[None] < lengths[:, None]).long()
    return ids * mask, mask, torch.tensor([4, 0, 6, 1])     # one row split at 0 (nothing cached)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_split_batch_gives_the_full_forward_logits(arch):
    model = hub.random_model(arch, seed=3).eval()
    ids, mask, split = _rows(model.config.vocab_size)
    full = model(input_ids=ids, attention_mask=mask).logits
    rows = lm.SplitBatch(model, ids, mask, split)
    got = rows.logits()
    for i in range(len(ids)):
        real = rows.suffix_mask[i].bool()
        torch.testing.assert_close(got[i][real], full[i, rows.positions[i][real]], atol=1e-4, rtol=1e-4)
    sub = rows.logits(torch.tensor([False, True, True, False]))   # a subset of the rows
    torch.testing.assert_close(sub[1][rows.suffix_mask[2].bool()], got[2][rows.suffix_mask[2].bool()],
                               atol=1e-5, rtol=1e-5)


def test_run_until_reads_what_capture_reads_and_stops_there():
    model = hub.random_model("gpt2", seed=4).eval()
    ids, mask, _ = _rows(model.config.vocab_size)
    name = "transformer.h.0.mlp.c_proj"
    with hooks.capture(model, [name], inputs=True) as seen:
        model(input_ids=ids, attention_mask=mask)
    ran = []
    handle = model.get_submodule("transformer.h.1").register_forward_hook(lambda *a: ran.append(1))
    try:
        early = hooks.run_until(model, name, inputs=True, input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    torch.testing.assert_close(early, seen[name])
    assert not ran, "the forward pass went on past the module it reads"


def test_rome_first_loss_is_the_full_forward_nll(wlm):
    """At δ = 0 the split path's loss is the mean target NLL over the contexts that a plain,
    full forward pass (:func:`lfmlab.core.lm.score`) gives: KL and weight decay are 0 there."""
    from lfmlab.data import world
    from lfmlab.editing import rome

    model, tok = wlm.model, wlm.tokenizer
    requests = world.load().edit_requests(2, seed=5)
    prefixes = rome.random_prefixes(model, tok, 3, (5,), seed=0)
    _, _, infos = rome.compute_values(model, tok, requests, prefixes, rome.RomeConfig(v_steps=1))
    for r, info in zip(requests, infos):
        texts, _ = rome._contexts(prefixes, r.prompt)
        s = lm.score(model, tok, texts, [r.target_new] * len(texts))
        assert info["loss"][0] == pytest.approx(float((-s.logprob / s.n_tokens).mean()), abs=2e-4)


def test_bbt_scores_in_chunks_with_the_same_numbers():
    from lfmlab.tuning import bbt, prompt

    base = hub.random_model("gpt2", seed=6)
    model = prompt.add_prompt(base, n_tokens=3).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, base.config.vocab_size, (6, 8), generator=g)
    mask = torch.ones_like(ids)
    mask[3:, 6:] = 0
    labels = torch.full_like(ids, -100)
    labels[:3, 5:7], labels[3:, 4:6] = ids[:3, 5:7], ids[3:, 4:6]
    batch = lm.PairBatch(ids * mask, mask, labels, torch.full((6,), 5))
    prompts = torch.randn(5, 3, base.config.n_embd, generator=g) * 0.02
    counter = bbt.CallCounter(model.base)
    chunked = bbt.population_losses(model, prompts, batch, rows=12)     # 2 candidates a call
    assert counter.calls == 3 and counter.rows == 5 * 6 and counter.prefix_calls == 3
    single = bbt.population_losses(model, prompts, batch, batched=False)
    torch.testing.assert_close(chunked, single, atol=1e-5, rtol=1e-5)
    # groups of 4 examples sorted by length (rows 3-5 need fewer positions), 3 candidates a call
    counter.calls = counter.rows = counter.prefix_calls = 0
    grouped = bbt.population_losses(model, prompts, batch, rows=12, group=4)
    assert (counter.calls, counter.rows, counter.prefix_calls) == (2 * 2, 5 * 6, 2)
    counter.close()
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)
    labels = batch.labels.clone()
    labels[0] = -100                                  # an example without answer tokens scores 0
    empty = lm.PairBatch(batch.input_ids, mask, labels, batch.prompt_len)
    torch.testing.assert_close(bbt.population_losses(model, prompts, empty, group=1),
                               bbt.population_losses(model, prompts, empty, batched=False),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n,k,kc", [(5000, 8, 1024), (4099, 3, 700), (300, 8, 8192), (1000, 1, 64)])
def test_exact_search_two_passes_find_the_brute_force_neighbours(n, k, kc):
    """Group minima first, then the k best groups: the same neighbours as a full sort."""
    from lfmlab.retrieval.datastore import exact_search

    g = torch.Generator().manual_seed(n)
    keys, queries = torch.randn(n, 24, generator=g), torch.randn(37, 24, generator=g)
    want = (torch.cdist(queries.double(), keys.double()) ** 2).topk(k, dim=1, largest=False)
    got = exact_search(queries, keys, k, query_chunk=16, key_chunk=kc)
    assert torch.equal(got.index, want.indices)
    torch.testing.assert_close(got.distance.double(), want.values, atol=1e-3, rtol=1e-4)
    near = keys[:40].repeat(3, 1)                                  # exact ties: any of them will do
    got = exact_search(near[:5] + 0.0, near, 3)
    assert torch.allclose(got.distance, torch.zeros_like(got.distance), atol=1e-4)
