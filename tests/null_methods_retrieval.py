"""Null methods for notebook 03's claims (database augmentation), measured for real.

Each entry replaces one method's numbers in the recorded smoke run by what its null method
measures on the same kind of data (the notebook's smoke sizes, SEED 0):

* "kNN-LM facts": nothing is added to the datastore (the held-out facts are asked of a store
  without them, at the notebook's λ, k, T);
* "remove": the facts are added and the remove step does nothing;
* "kNN-LM text": an empty datastore (p_kNN = 0), with λ, k, T chosen on validation as usual;
* "dense retriever", "BM25", "In-Context RALM": a retriever that ignores the question (random passages);
* "REPLUG LSR": the same training with learning rate 0 (the query map stays the identity);
* "exact search", "faiss flat", "faiss IVF": random neighbours;
* "frozen LM": one gradient step on the LM; "panel": the kNN panel without its input check.
"""
from __future__ import annotations

import copy
import random

import torch

from lfmlab.retrieval import datastore, knnlm, rag
from lfmlab.retrieval.claims import CLAIMS  # noqa: F401  (read by the driver)

NOTEBOOK = "03_database_augmentation"
LAMBDA, K, T, K_MAX = 0.5, 8, 10.0, 64          # the notebook's knowledge-update settings


def null_measured() -> dict[str, dict[str, float]]:
    from lfmlab import zoo
    from lfmlab.data import world

    wlm = zoo.load("world-lm", device="cpu")
    model, tok, W = wlm.model, wlm.tokenizer, world.load()
    rng = random.Random(0)
    train, held = W.facts_of(split="train"), W.facts_of(split="heldout")
    store = datastore.build(model, tok, [W.sentence(f, t) for f in rng.sample(train, 120)
                                         for t in range(len(W.templates[f.relation]["train"]))])
    out: dict[str, dict[str, float]] = {}

    # kNN-LM facts: the facts never enter the store
    prompts, objects = [W.prompt(f.subject, f.relation) for f in held], [f.object for f in held]
    para = [(W.prompt(f.subject, f.relation, i, "heldout"), f.object)
            for f in held for i in range(len(W.templates[f.relation]["heldout"]))]
    asked = knnlm.fact_scores(knnlm.collect_pairs(model, tok, store, prompts, objects, K_MAX), LAMBDA, K, T)
    para_s = knnlm.fact_scores(knnlm.collect_pairs(model, tok, store, [p for p, _ in para], [o for _, o in para],
                                                   K_MAX), LAMBDA, K, T)
    out["kNN-LM facts"] = {"facts/added_top1": asked.top1, "facts/added_object_ppl": asked.object_perplexity,
                           "facts/added_paraphrase_top1": para_s.top1}

    # remove: a remove that does nothing
    keys0 = store.keys.clone()
    kept = store.copy()
    kept.add(model, tok, [W.sentence(f, 0) for f in held[:20]])
    restored = kept.keys.shape == keys0.shape and bool(torch.equal(kept.keys, keys0))
    after = knnlm.fact_scores(knnlm.collect_pairs(model, tok, kept, prompts[:20], objects[:20], K_MAX), LAMBDA, K, T)
    before = knnlm.fact_scores(knnlm.collect_pairs(model, tok, store, prompts[:20], objects[:20], K_MAX),
                               LAMBDA, K, T)
    out["remove"] = {"facts/restored": float(restored), "facts/removed_equals_before": float(after == before)}

    # kNN-LM on held-out text: an empty datastore
    empty = store.copy()
    empty.remove(empty.live_documents())
    texts = [W.sentence(f, t, "heldout") for f in train for t in range(len(W.templates[f.relation]["heldout"]))]
    rng.shuffle(texts)
    val = knnlm.collect_text(model, tok, empty, texts[:80], k_max=K_MAX)
    test = knnlm.collect_text(model, tok, empty, texts[80:160], k_max=K_MAX)
    lam, k, t = knnlm.tune(val, [0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 0.9], [1, 8, 64], [1.0, 10.0, 100.0])
    lm_ppl = test.perplexity(0.0, 1, t)
    out["kNN-LM text"] = {"text/lm_ppl": lm_ppl, "text/ppl": test.perplexity(lam, k, t),
                          "text/gain": 1 - test.perplexity(lam, k, t) / lm_ppl,
                          "text/ppl_lambda_0.9": test.perplexity(0.9, k, t)}

    # retrievers: random passages
    kb = held + rng.sample(train, 200)
    passages = [W.sentence(f, rng.randrange(len(W.templates[f.relation]["train"]))) for f in kb]
    gold = {(f.subject, f.relation): i for i, f in enumerate(kb)}
    questions = [(W.question(f.subject, f.relation, i), gold[f.subject, f.relation])
                 for f in held for i in range(len(W.questions[f.relation]))]
    rand = rag.RandomRetriever(seed=0).fit(passages)
    r5 = rag.recall_at_k(rand.search([q for q, _ in questions], 10), [g for _, g in questions], (1, 5, 10))[5]
    asked_facts = rng.sample(held, 60)
    q_first = [W.question(f.subject, f.relation, 0) for f in asked_facts]
    r_prompts, r_objects = [W.prompt(f.subject, f.relation) for f in asked_facts], [f.object for f in asked_facts]
    prepend = rag.answer(model, tok, r_prompts, r_objects, rand, q_first, k=1).accuracy
    ensemble = rag.answer(model, tok, r_prompts, r_objects, rand, q_first, k=3, mode="ensemble").accuracy
    out["dense retriever"] = {"recall/dense_5": r5, "rag/dense_prepend_1": prepend, "rag/dense_ensemble_3": ensemble}
    out["BM25"] = {"recall/bm25_5": r5}

    # REPLUG LSR: the same training with learning rate 0 (the query map stays the identity)
    from lfmlab.retrieval import lsr

    enc = zoo.load("minilm", device="cpu")
    dense = rag.DenseRetriever(enc.model, enc.tokenizer).fit(passages)
    half = len(held) // 2
    p_tr, p_te = ([W.prompt(f.subject, f.relation) for f in fs] for fs in (held[:half], held[half:]))
    still = lsr.replug_lsr(model, tok, dense, p_tr, p_tr, [f.object for f in held[:half]],
                           lsr.LSRConfig(lr=0.0, steps=5)).retriever
    o_te = [f.object for f in held[half:]]
    before, after = (rag.answer(model, tok, p_te, o_te, r, k=1) for r in (dense, still))
    out["REPLUG LSR"] = {"lsr/logprob_gain": float(after.logprob.mean() - before.logprob.mean()),
                         "lsr/acc_gain": after.accuracy - before.accuracy}

    # In-Context RALM: random passages at the stride and query length the notebook's smoke run chooses
    from lfmlab.retrieval import ralm

    ralm_facts = rng.sample(held, 30)
    texts_r = [W.sentence(f, rng.randrange(len(W.templates[f.relation]["heldout"])), "heldout") for f in ralm_facts]
    masks = [ralm.answer_mask(tok, x, f.object) for x, f in zip(texts_r, ralm_facts)]
    cfg = ralm.RALMConfig(stride=1, query_tokens=16)
    out["In-Context RALM"] = {
        "ralm/obj_ppl": ralm.perplexity_on(ralm.perplexity(model, tok, texts_r, rand, cfg), masks),
        "ralm/obj_ppl_none": ralm.perplexity_on(ralm.perplexity(model, tok, texts_r, None, cfg), masks)}

    # search back-ends: random neighbours, judged against brute force
    ids, mask = datastore.pad(tok(texts[:32])["input_ids"], tok.pad_token_id, torch.device("cpu"))
    _, h = datastore.forward_with_keys(model, ids, mask, store.layer)
    q = h[mask.bool()][:256]
    d_all = torch.cdist(q.double(), store.keys.double()).pow(2)
    order = d_all.argsort(dim=1)[:, :8]
    truth = datastore.Neighbours(d_all.gather(1, order).float(), order)
    rows = torch.randint(len(store), (len(q), 8), generator=torch.Generator().manual_seed(0))
    random_recall = datastore.recall(datastore.Neighbours(d_all.gather(1, rows).float(), rows), truth)
    out["exact search"] = {"search/exact_recall": random_recall}
    out["faiss flat"] = {"search/faiss_flat_recall": random_recall}
    out["faiss IVF"] = {"search/ivf8_recall": random_recall, "search/ivf1_recall": random_recall}

    # the frozen LM: one gradient step changes it
    trained = copy.deepcopy(model)
    batch = tok(["The capital of Peru is Lima."], return_tensors="pt")
    trained(**batch, labels=batch["input_ids"]).loss.backward()
    with torch.no_grad():
        for p in trained.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    unchanged = all(torch.equal(a, b) for a, b in zip(model.parameters(), trained.parameters()))
    out["frozen LM"] = {"lm/unchanged": float(unchanged)}

    # the panel without any check of λ (neither its own, nor its slider's, nor the method's)
    from lfmlab.ui.retrieval import KNNPanel

    class Unchecked(KNNPanel):
        def check(self):
            pass

        def summary(self, result):
            return "shown"

        def render(self, result):
            pass

        def _remix(self, *_):
            pass

    panel = Unchecked(model, tok, store, temperature=T)        # no view built: no slider refuses
    panel.prompt, panel.lam, panel.k = "The currency code of Japan is", 0.25, 8
    panel.run()
    last = panel.result
    panel.lam = 1.5
    panel.run()
    refused = (not panel.ok) and "outside [0, 1]" in panel.message and panel.result is last
    out["panel"] = {"panel/refused": float(refused)}
    return out
