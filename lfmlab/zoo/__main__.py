"""``python -m lfmlab.zoo list | train NAME [--smoke] [--out DIR] [--seed N] | verify``.

The zoo never imports a method area. A step that measures a trained model with a method (world-lm's
causal-tracing profile, which picks the layer that locate-and-edit methods edit) is its own command,
which ``train`` prints when it is done (:data:`AFTER_TRAINING`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lfmlab  # noqa: F401  (sets OMP_WAIT_POLICY before torch)

# what to run after a recipe: a command that records a measurement on the new card
AFTER_TRAINING = {"world-lm": "python -m lfmlab.editing.trace {out}   (puts the causal-tracing profile on the card)"}


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
        print(card)
        print(f"trained {args.name} in {time.perf_counter() - start:.1f}s -> {out}")
        if args.name in AFTER_TRAINING:
            print(f"next: {AFTER_TRAINING[args.name].format(out=out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
