"""Whether a process is still running, for removing what dead processes left behind (partial
files, backend logs).

Standard library only: the Blender add-on carries a copy (build_addon.py's SHARED).
"""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """False only when `pid` surely names no running process. On Windows os.kill(pid, 0) would
    terminate the process, so there every process counts as alive; so does another user's
    process, or one the system will not tell about."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True
