"""The ``cxr`` command line: the parser in :mod:`cxr_core.cli.parser`, one module per command in :mod:`cxr_core.cli.commands`."""

from cxr_core.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
