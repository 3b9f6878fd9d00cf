"""world-lm: a small GPT-2 pretrained by lfmlab's own recipe on real-world facts.

It is the foundation model of the text notebooks (tuning, retrieval, distillation, editing):
it *knows* ~1,300 real facts (capitals, continents, languages, currencies, ISO codes, regions,
element symbols) and can copy a fact it is shown in its context.

Recipe (``python -m lfmlab.zoo train world-lm``, deterministic on one CPU thread):

1. a byte-level BPE tokenizer (vocabulary 1,024, ``add_prefix_space=True``) trained on the
   corpus. Byte-level BPE matters: the model then stores a fact in the early MLPs at the
   subject's last token, where locate-and-edit methods (ROME, MEMIT) find it. A word-level
   tokenizer memorises as well but looks facts up at the prompt's last token;
2. the corpus: every *train* fact under every *train* template, each subject asked about in
   several relations, in subject-first and relation-first phrasings; plus short passages in
   which a fact is stated and later restated, and passages about invented places (fresh
   each epoch, half of them with invented objects too) whose restated fact can only be
   predicted by copying from the context; and passages that state a *random* object for a
   real subject and then restate it (fresh objects each epoch). Without these the model
   copies only for subjects it does not know: for a known country it answers from memory
   even right after reading the answer (held-out facts in context: 49% -> 89% with them);
3. GPT-2, 6 layers, width 128, 4 heads, 128 positions, **no dropout** (dropout 0.1 cut
   train-template recall from 98% to 67% at 25 epochs): rows of 128 packed tokens, batch 8,
   AdamW 3e-3 (betas .9/.98, weight decay .01), linear warm-up then cosine decay, 40 epochs
   (25 epochs: 98% train-template but 87% held-out-template recall; 40: 99.9% and 99.7%).

Held-out facts and held-out templates never appear in the corpus.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from lfmlab.core.lmtrain import pack, train_epoch
from lfmlab.core.schedules import cosine
from lfmlab.core.types import Tokenizer
from lfmlab.zoo.card import ModelCard, record

NAMES = ("world-lm",)
BOS = "<|endoftext|>"
# GPT-2's tanh-approximated GELU as one fused kernel ("gelu_pytorch_tanh"): the same function as
# GPT-2's "gelu_new" (to 2.4e-7), written there as five elementwise passes, which cost a CPU up
# to a third of a forward pass on batches too large for its cache
ARCH = dict(n_layer=6, n_embd=128, n_head=4, n_positions=128, vocab_size=1024,
            activation_function="gelu_pytorch_tanh",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # no dropout: it slows memorising facts
TRAIN = dict(epochs=40, batch_size=8, lr=3e-3, betas=(0.9, 0.98), weight_decay=0.01,
             warmup=0.05, row_tokens=128, nonce_passages=1000, counterfactual_passages=600, seed=0)
NONCE_OBJECT_SHARE = 0.5
SMOKE_ARCH = dict(ARCH, n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=512)
SMOKE_TRAIN = dict(TRAIN, epochs=40, row_tokens=64, nonce_passages=0, counterfactual_passages=0,
                   batch_size=8, lr=5e-3)
SMOKE_RELATIONS = ("element_symbol",)

_SYLLABLES = ("ka", "lo", "mi", "ran", "tu", "vel", "zor", "qui", "sa", "ben", "dro", "fi",
              "gal", "hu", "nor", "pe", "xi", "ya", "wen", "osk", "tam", "ril", "ced", "mo")


def build_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE on ``texts`` and wrap it for transformers (adds BOS to every encode)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS,
                                   unk_token=None, add_prefix_space=True, model_max_length=ARCH["n_positions"])


def _nonce_name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def corpus(world, seed: int = 0, relations: tuple[str, ...] | None = None,
           nonce_passages: int = 0, counterfactual_passages: int = 0) -> list[str]:
    """The pretraining documents (shuffled deterministically). No held-out fact or template appears."""
    rng = random.Random(seed)
    facts = [f for f in world.facts_of(split="train") if relations is None or f.relation in relations]
    docs = [world.sentence(f, t) for f in facts for t in world.templates[f.relation]["train"]]
    by_subject: dict[str, list] = {}
    for f in facts:
        by_subject.setdefault(f.subject, []).append(f)
    for subject in sorted(by_subject):  # a fact stated, another fact, the first restated
        own = by_subject[subject]
        first, other = rng.choice(own), rng.choice(own)
        t1, t2 = rng.sample(world.templates[first.relation]["train"], 2)
        docs.append(" ".join([world.sentence(first, t1), world.sentence(other, 0), world.sentence(first, t2)]))
    docs += nonce_docs(world, rng, nonce_passages, relations, NONCE_OBJECT_SHARE)
    docs += counterfactual_docs(facts, world, rng, counterfactual_passages)
    rng.shuffle(docs)
    return docs


def _nonce_object(relation: str, objects: list[str], rng: random.Random) -> str:
    """An invented object shaped like the relation's real ones (3-letter code, symbol, name)."""
    upper = "ABCDEFGHIJKLMNOPRSTUVWYZ"
    if all(len(o) == 3 and o.isupper() for o in objects):
        return "".join(rng.choice(upper) for _ in range(3))
    if all(len(o) <= 3 and o[0].isupper() for o in objects):
        return rng.choice(upper) + rng.choice("abdeghiklmnorstuy") * rng.randint(0, 1)
    return _nonce_name(rng)


def nonce_docs(world, rng: random.Random, n: int, relations: tuple[str, ...] | None = None,
               nonce_object_share: float = 0.5) -> list[str]:
    """Passages about invented subjects, stated then restated: the restatement can only be
    predicted by copying from the context. Half of them also invent the object, so that the
    model learns to copy strings it has never seen (as held-out facts are, in retrieval)."""
    from lfmlab.data.world import Fact

    rels = [r for r in world.relations if relations is None or r in relations]
    docs = []
    for _ in range(n):
        rel = rng.choice(rels)
        objects = world.objects(rel)
        obj = _nonce_object(rel, objects, rng) if rng.random() < nonce_object_share else rng.choice(objects)
        fact = Fact(_nonce_name(rng), rel, obj, "train")
        t1, t2 = rng.choice(world.templates[rel]["train"]), rng.choice(world.templates[rel]["train"])
        docs.append(f"{world.sentence(fact, t1)} {world.sentence(fact, t2)}")
    return docs


def counterfactual_docs(facts: list, world, rng: random.Random, n: int) -> list[str]:
    """Passages that state a *random* object for a real (subject, relation) and then restate it.
    The restatement can only be predicted from the context, against the model's memory: this is
    what teaches a model to use retrieved text about subjects it already knows something about.
    Objects are drawn afresh each epoch, so no false fact is ever repeated."""
    from dataclasses import replace

    docs = []
    for f in rng.sample(facts, min(n, len(facts))):
        other = replace(f, object=rng.choice([o for o in world.objects(f.relation) if o != f.object]))
        t1, t2 = rng.choice(world.templates[f.relation]["train"]), rng.choice(world.templates[f.relation]["train"])
        docs.append(f"{world.sentence(other, t1)} {world.sentence(other, t2)}")
    return docs


def build_model(arch: dict):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(**arch, bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=True)
    return GPT2LMHeadModel(config)


def pretrain(model, tokenizer: Tokenizer, world, hp: dict, relations=None, log=print) -> list[float]:
    """The training loop of the recipe. Returns the mean loss of each epoch."""
    from lfmlab.progress import progress

    g = torch.Generator().manual_seed(hp["seed"])
    docs = lambda seed: corpus(world, seed, relations, hp["nonce_passages"], hp.get("counterfactual_passages", 0))  # noqa: E731
    rows_per_epoch = len(pack(tokenizer, docs(hp["seed"]), hp["row_tokens"]))
    steps = hp["epochs"] * math.ceil(rows_per_epoch / hp["batch_size"])
    warm = max(1, int(hp["warmup"] * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=hp["betas"], weight_decay=hp["weight_decay"])
    sched = cosine(opt, steps, warm)
    model.train()
    losses = []
    bar = progress(total=hp["epochs"], desc="world-lm pretraining")
    for epoch in range(hp["epochs"]):
        rows = pack(tokenizer, docs(hp["seed"] + epoch), hp["row_tokens"])
        rows = rows[torch.randperm(len(rows), generator=g)]
        losses.append(train_epoch(model, rows, hp["batch_size"], opt, sched))
        bar.update(1)
        bar.set_postfix(loss=losses[-1])
    bar.close()
    model.eval()
    return losses


def evaluate(model, tokenizer: Tokenizer, world, relations=None) -> dict[str, float]:
    """The card's quality figures: exact-match recall under train and held-out templates, and
    held-out (never trained) facts without and with the fact given in context."""
    from lfmlab.core.lm import exact_match

    def pairs(split: str, tsplit: str, in_context: bool = False):
        prompts, targets = [], []
        for f in world.facts_of(split=split):
            if relations is not None and f.relation not in relations:
                continue
            for t in world.templates[f.relation][tsplit]:
                prompt = world.prompt(f.subject, f.relation, t)
                if in_context:
                    prompt = f"{world.sentence(f, 0)} {prompt}"
                prompts.append(prompt)
                targets.append(f.object)
        return prompts, targets

    return {
        "train_template_recall": exact_match(model, tokenizer, *pairs("train", "train")),
        "heldout_template_recall": exact_match(model, tokenizer, *pairs("train", "heldout")),
        "heldout_fact_recall": exact_match(model, tokenizer, *pairs("heldout", "train")),
        "heldout_fact_recall_in_context": exact_match(model, tokenizer, *pairs("heldout", "train", True)),
    }


def object_tokenisation(tokenizer: Tokenizer, world) -> dict[str, int]:
    """How many distinct objects encode to 1, 2, ... tokens (recorded on the card, checked by tests)."""
    from lfmlab.core.lm import encode_target

    counts: dict[str, int] = {}
    for rel in world.relations:
        for obj in world.objects(rel):
            n = len(encode_target(tokenizer, obj))
            counts[str(n)] = counts.get(str(n), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0])))


def train(name: str, out_dir: Path, smoke: bool = False, seed: int = 0) -> ModelCard:
    """Rerun the recipe into ``out_dir`` and write the weights, tokenizer and card."""
    from lfmlab.data import world as world_data

    out_dir = Path(out_dir)
    world = world_data.load()
    arch, hp = (SMOKE_ARCH, SMOKE_TRAIN) if smoke else (ARCH, TRAIN)
    hp = dict(hp, seed=seed)
    relations = SMOKE_RELATIONS if smoke else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread beat two on the shared 2-core machine
    try:
        start = time.perf_counter()
        torch.manual_seed(seed)
        tokenizer = build_tokenizer(corpus(world, seed, relations, hp["nonce_passages"],
                                           hp["counterfactual_passages"]), arch["vocab_size"])
        model = build_model(arch)
        losses = pretrain(model, tokenizer, world, hp, relations)
        seconds = time.perf_counter() - start
        quality = evaluate(model, tokenizer, world, relations)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    n_facts = len([f for f in world.facts if relations is None or f.relation in relations])
    card = ModelCard(
        name=name,
        summary="GPT-2-architecture causal LM pretrained by lfmlab on real-world facts rendered as sentences",
        architecture=f"GPT2LMHeadModel ({arch['n_layer']} layers, width {arch['n_embd']}, {arch['n_head']} heads, "
        f"{arch['n_positions']} positions, byte-level BPE vocabulary {arch['vocab_size']})",
        parameters=sum(p.numel() for p in model.parameters()),
        trained_on=f"{n_facts} facts of lfmlab.data.world ({'smoke subset' if smoke else 'all relations'}): "
        "train facts under train templates, restated-fact passages, invented-place and counterfactual copy passages",
        quality={k: round(v, 4) for k, v in quality.items()},
        regenerate=f"python -m lfmlab.zoo train {name}"
        + (" --smoke" if smoke else "")
        + " && python -m lfmlab.editing.trace lfmlab/zoo/weights/world-lm",
        recipe={
            "arch": arch,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in hp.items()},
            "final_loss": round(losses[-1], 4),
            "train_seconds": round(seconds, 1),
            "threads": 1,
            "torch": torch.__version__,
        },
        notes={"object_tokens": object_tokenisation(tokenizer, world)},
    )
    files = [p.name for p in out_dir.iterdir() if p.name != "card.json"]
    return record(out_dir, card, files)


def load(name: str = "world-lm"):
    """The committed world-lm (sha256-checked) and its tokenizer."""
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from lfmlab.zoo import load_committed
    from lfmlab.zoo.card import quiet_loading

    card, folder = load_committed(name)
    with quiet_loading():
        model = GPT2LMHeadModel.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model, tokenizer, card
