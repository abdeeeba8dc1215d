"""CLI sub-commands: each module defines ``register(subparsers)`` and is discovered by :mod:`cxr_core.cli`."""
