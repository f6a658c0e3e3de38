"""The state file's safety: what could lose the unsubscribes or stop every command is refused
with one clear line, never passed over silently.

This module knows files and SQLite, not the journal's tables (journal.py imports it).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from newsletter.errors import NewsletterError

# --- flight logs ----------------------------------------------------------------------------


def flight_log_room(paths: list[Path]) -> None:
    """Before a send: each connection's flight log name is free or a file (ours, from a crash).

    Anything else there (a directory someone made) is not ours and cannot hold a flight log:
    one clear line before anything is sent. Reading ignores such entries (journal.flight_paths).
    """
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(os.lstat(p).st_mode):
                raise NewsletterError(
                    f"{p}: in the way of this send's flight log (not a regular file). Remove or "
                    "rename it, then send again; nothing was sent."
                )
