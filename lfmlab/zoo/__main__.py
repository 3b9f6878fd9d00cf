"""``python -m lfmlab.zoo list | train NAME [--smoke] [--out DIR] [--seed N] | verify``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lfmlab  # noqa: F401  (sets OMP_WAIT_POLICY before torch)


def trace_world_lm(folder: Path, card, n: int = 60, samples: int = 10):
    """Put world-lm's causal-tracing profile on its card: the average indirect effect per layer
    of restoring the MLP / attention / hidden state at the subject's last token, over ``n``
    train facts it recalls. It picks the layer that locate-and-edit methods should edit.

    This lives in the command line (an application above every layer), not in the recipe:
    the zoo itself never imports a method module.
    """
    import random

    from transformers import AutoTokenizer, GPT2LMHeadModel

    from lfmlab import lm
    from lfmlab.data import world as world_data
    from lfmlab.editing.trace import profile
    from lfmlab.zoo.card import record

    w = world_data.load()
    model, tok = GPT2LMHeadModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    facts = w.facts_of(split="train")
    random.Random(0).shuffle(facts)
    cases = []
    for f in facts:
        prompt = w.prompt(f.subject, f.relation)
        if lm.exact_match(model, tok, [prompt], [f.object]) == 1.0:
            cases.append((prompt, f.subject, f.object))
        if len(cases) == n:
            break
    start = time.perf_counter()
    card.notes["causal_trace"] = {**profile(model, tok, cases, samples=samples),
                                  "seconds": round(time.perf_counter() - start, 1),
                                  "how": f"{n} recalled train facts, template 0, {samples} noise samples, "
                                         "noise 3x embedding std, window 1"}
    files = [p.name for p in Path(folder).iterdir() if p.name != "card.json"]
    print(f"causal trace: best MLP layer {card.notes['causal_trace']['best_mlp_layer']}")
    return record(folder, card, files)


AFTER_TRAINING = {"world-lm": trace_world_lm}


def main(argv: list[str] | None = None) -> int:
    from lfmlab import zoo
    from lfmlab.zoo.card import WEIGHTS, verify

    parser = argparse.ArgumentParser(prog="python -m lfmlab.zoo", description="lfmlab's model zoo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="print every model card")
    sub.add_parser("verify", help="check every committed weight file against its card's sha256")
    train = sub.add_parser("train", help="rerun a model's recipe (rewrites its weights and card)")
    train.add_argument("name")
    train.add_argument("--smoke", action="store_true", help="a tiny, fast version of the recipe")
    train.add_argument("--out", type=Path, default=None, help="folder to write (default: the zoo's own)")
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.cmd == "list":
        for c in zoo.cards():
            print(c, end="\n\n")
    elif args.cmd == "verify":
        for name in zoo.names():
            folder = WEIGHTS / name
            if (folder / "card.json").exists():
                verify(folder, zoo.ModelCard.read(folder))
                print(f"ok  {name}")
    else:
        owners = zoo._owners()
        if args.name not in owners or not hasattr(owners[args.name], "train"):
            trainable = [n for n, m in owners.items() if hasattr(m, "train")]
            print(f"no recipe for {args.name!r}; models with recipes: {', '.join(trainable)}", file=sys.stderr)
            return 2
        out = args.out or WEIGHTS / args.name
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        card = owners[args.name].train(args.name, out, smoke=args.smoke, seed=args.seed)
        if args.name in AFTER_TRAINING:
            card = AFTER_TRAINING[args.name](out, card)
        print(card)
        print(f"trained {args.name} in {time.perf_counter() - start:.1f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
