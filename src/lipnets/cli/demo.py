"""`lipnets demo`: reproduce the papers' figures on bundled and generated data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    demo = commands.add_parser("demo", help="reproduce the papers' figures on bundled and generated data")
    demo.add_argument("--out", default="lipnets-output", help="folder for the figures (default: lipnets-output)")
    demo.add_argument("--only", nargs="*", help="run only these demos")
    demo.add_argument("--quick", action="store_true", help="fewer seeds and epochs, for a smoke test")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demos import DEMOS, load
    from ..io.report import print_table

    torch.set_num_threads(1)  # the demos' models are small: one thread is fastest and leaves a core free
    names = args.only or list(DEMOS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        rows = load(name)(out, args.quick)
        print_table(rows, title=f"lipnets demo: {name}")
    print(f"figures written to {out.resolve()}")
    return 0
