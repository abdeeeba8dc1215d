"""Allow ``python -m cxr_core``."""

from cxr_core.cli import main

raise SystemExit(main())
