"""Allow ``python -m cxr_core``."""

from cxr_core.cli.parser import run

run()
