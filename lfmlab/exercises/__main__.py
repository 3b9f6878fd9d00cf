"""``python -m lfmlab.exercises list | masters DIR | build DIR [--masters FOLDER]``"""
from __future__ import annotations

import argparse
import sys

from lfmlab import exercises
from lfmlab.exercises import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfmlab.exercises", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every exercise: section, difficulty, minutes, title")
    m = sub.add_parser("masters", help="(re)write the master notebooks from the registry into DIR")
    m.add_argument("dir")
    b = sub.add_parser("build", help="write DIR/student/ and DIR/solution/ from the masters")
    b.add_argument("dir")
    b.add_argument("--masters", default=None, help="the folder of the master notebooks "
                   "(default: notebooks/exercises of this checkout)")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in exercises.names():
            ex = exercises.get(name)
            print(f"{ex.section}  {'★' * ex.difficulty:3s} {ex.minutes:3d} min  {name:24s} {ex.title}")
        return 0
    if args.command == "masters":
        from lfmlab.exercises.masters import write_masters

        for p in write_masters(args.dir):
            print(p)
        return 0
    try:
        paths = build.build(args.dir, args.masters)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
