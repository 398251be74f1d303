"""The `lipnets` command. Each subcommand has --help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .demos import DEMOS, load
    from .reporting import print_table

    names = args.only or list(DEMOS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = load(name)(out, args.quick)
        print_table(rows, title=f"lipnets demo: {name}")
    print(f"figures written to {out.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lipnets` command."""
    parser = argparse.ArgumentParser(prog="lipnets", description="Neural networks with provable Lipschitz, monotonicity and robustness guarantees.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="reproduce the papers' figures on bundled and generated data")
    demo.add_argument("--out", default="lipnets-output", help="folder for the figures (default: lipnets-output)")
    demo.add_argument("--only", nargs="*", help="run only these demos")
    demo.add_argument("--quick", action="store_true", help="fewer seeds and epochs, for a smoke test")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lipnets` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"lipnets {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
