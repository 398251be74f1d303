"""The `lipnets` command: fit, predict, certify and export models of tables, and run the demos."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
