"""Printing and saving result tables for the demos, benchmarks and the command line."""

from __future__ import annotations

import shlex
from collections.abc import Sequence


def format_table(rows: Sequence[dict], title: str | None = None) -> str:
    """A Markdown table of `rows` (dicts sharing keys); floats get 4 significant digits.

    >>> print(format_table([{"model": "lipnets", "mse": 7.123456}]))
    | model | mse |
    |---|---|
    | lipnets | 7.123 |
    """
    if not rows:
        return f"{title}: (no rows)" if title else "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda value: f"{value:.4g}" if isinstance(value, float) else str(value)  # noqa: E731
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(cell(row.get(column, "")) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[dict], title: str | None = None) -> None:
    """Print `format_table(rows, title)` followed by a blank line."""
    print(format_table(rows, title) + "\n")


def benchmark_record(name: str, script: str, argv: Sequence[str], body: str, versions: str = "") -> str:
    """The Markdown record of a benchmark run: a title, the command that produced it, the machine, `body`."""
    import platform

    import torch

    command = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python", script, shlex.join(list(argv))]).rstrip()
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    machine += f", {versions}" if versions else ""
    return f"# {name}\n\nCommand: `{command}`\n\nMachine: 2 CPU cores shared with other work; {machine}\n\n{body}\n"
