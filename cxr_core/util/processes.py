"""Whether a process recorded in a lock or status file still lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pid_alive(pid: Any) -> bool:
    """True when ``pid`` is a live (not zombie) process; on Linux it must also be a Python process."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (TypeError, ValueError, OSError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return pid > 0
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return pid > 0 and state not in {"Z", "X"} and ("python" in cmdline.lower() or "cxr" in cmdline)
