"""`gvw`: the operator's command line, a module per command group."""

from worker.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
