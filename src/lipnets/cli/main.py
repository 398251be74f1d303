"""The `lipnets` command. Each subcommand has --help and lives in its own module.

    lipnets fit data.csv --target y --increasing a,b --decreasing c --out model/
    lipnets predict model/ data.csv [--out predictions.csv] [--proba]
    lipnets certify model/ data.csv [--threshold t] [--eps 0.1,1] [--out radii.csv]
    lipnets export model/ --onnx model.onnx
    lipnets demo [--only name ...] [--quick]

Tables are CSV or Parquet. A model folder is written by `fit` (see lipnets.sklearn.persistence) and only
appears once complete. Heavy libraries (torch, pandas, scikit-learn) load only when a subcommand runs,
so `lipnets --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import certify, demo, export, fit, predict

SUBCOMMANDS = (fit, predict, certify, export, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lipnets` command."""
    parser = argparse.ArgumentParser(
        prog="lipnets", description="Neural networks with provable Lipschitz, monotonicity and robustness guarantees."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def _log_progress() -> None:
    """Training progress goes to stderr as log lines when stderr is not a terminal (a bar otherwise)."""
    import logging

    logger = logging.getLogger("lipnets.fit")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lipnets` command."""
    args = build_parser().parse_args(argv)
    _log_progress()
    try:
        return args.handler(args)
    except BrokenPipeError:  # the reader of stdout (e.g. `head`) closed it: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, TypeError, RuntimeError) as error:
        print(f"lipnets {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
