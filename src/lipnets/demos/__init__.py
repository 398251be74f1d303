"""The demos behind `lipnets demo`: each reproduces a figure or study of the papers and prints a table.

A demo is a function `run(out_dir: pathlib.Path, quick: bool) -> list[dict]` registered in DEMOS;
it writes its PNGs under out_dir and returns the rows of its summary table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ..validation import require_extra

DEMOS: dict[str, str] = {
    "paper-toys": "lipnets.demos.paper_toys",
    "two-moons": "lipnets.demos.two_moons",
    "ot-sdf": "lipnets.demos.ot_sdf",
    "implicit-surface": "lipnets.demos.implicit_surface",
}
"""Demo name -> module defining `run`."""


def load(name: str) -> Callable[[Path, bool], list[dict]]:
    """The `run` function of the demo called `name`."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}: choose from {', '.join(DEMOS)}")
    require_extra("matplotlib", "plots")
    return importlib.import_module(DEMOS[name]).run
