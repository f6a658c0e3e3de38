"""The state file's safety: nothing that could lose the unsubscribes passes silently.

The state file (`[paths] state`) is the only record of who unsubscribed. Losing it (truncated,
replaced, a restore gone wrong) and carrying on would send the next alert to everyone, members
who unsubscribed included: a legal problem, not a cosmetic one. So, around `journal.Journal`:

- a file that exists but is empty or is not a newsletter state file is refused, never re-created;
  a missing one is created only when no backup of it exists (else: restore it), and a new file
  appears whole (built beside it, then linked into place), so an empty file is never ours;
- a permission or disk fault says so, with the operating system's own words, instead of advice
  to move the file away (which is how a read-only folder became a resend to everyone);
- before each send that writes deliveries, a consistent copy (SQLite's online backup API, safe
  while `serve` writes) goes to `<state>.backups/`, and another when it ends (restoring the one
  from before a send would forget who that send reached, and the next run would resend to
  them); an upgrade of the file's schema makes one first; the newest KEEP_BACKUPS are kept;
- every error about the state file says where the latest backup is and that moving the file
  away forgets every unsubscribe in it;
- `newsletter suppress --export FILE` writes the suppression list as CSV, to keep outside the
  tool (newsletter/export.py);
- a directory where a flight log goes stops no command (journal.flight_paths ignores it) and
  stops a send that needs the name before anything is sent (flight_log_room).

This module knows files and SQLite, not the journal's tables (journal.py imports it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

from newsletter.errors import NewsletterError

KEEP_BACKUPS = 10  # two per send (before, after): the last five sends
BACKUP_SUFFIX = ".db"
# SQLite's primary result codes that mean the OS refused (permissions, disk, a read-only mount),
# not that the file is damaged: SQLITE_PERM, READONLY, IOERR, FULL, CANTOPEN, NOLFS.
OS_FAULT_CODES = {3, 8, 10, 13, 14, 22}


# --- backups ----------------------------------------------------------------------------------


def backup_dir(state: Path) -> Path:
    """Where the state file's backups go: `newsletter.db.backups/` beside `newsletter.db`."""
    return state.with_name(state.name + ".backups")


def backups(state: Path) -> list[Path]:
    """The state file's backups, oldest first (their names are UTC times)."""
    folder = backup_dir(state)
    with contextlib.suppress(OSError):
        return sorted(
            p
            for p in folder.iterdir()
            if p.name.endswith(BACKUP_SUFFIX) and not p.name.startswith(".") and p.is_file()
        )
    return []


def latest_backup(state: Path) -> Path | None:
    """The newest backup of the state file, or None."""
    found = backups(state)
    return found[-1] if found else None


def make_backup(db: sqlite3.Connection, state: Path, label: str) -> Path:
    """Copy the open state file `db` into a new backup; drop all but the newest KEEP_BACKUPS.

    Named `<UTC time>-<label>.db` (e.g. `…-before-send.db`): time order is name order.

    SQLite's backup API copies a consistent snapshot (WAL content included) while other
    processes keep writing. The copy is written under a temporary name, fsync'd and renamed, so
    a backup that exists is whole. Backups hold members' addresses: owner-only permissions.
    """
    folder = backup_dir(state)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S.%fZ")
    final = folder / f"{stamp}-{label}{BACKUP_SUFFIX}"
    partial = folder / f".{stamp}.partial"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        dest = sqlite3.connect(partial)
        try:
            db.backup(dest)
            # A self-contained file (no -wal beside it): a restore is one copy.
            dest.execute("PRAGMA journal_mode = DELETE")
        finally:
            dest.close()
        os.chmod(partial, 0o600)
        _fsync(partial)
        os.replace(partial, final)
        _fsync(folder)
    except (OSError, sqlite3.Error) as err:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise NewsletterError(
            f"{state}: cannot back it up into {folder}/ ({label}: {err}). Free disk space or "
            "fix the folder's permissions, then run again."
        ) from None
    for old in backups(state)[:-KEEP_BACKUPS]:
        with contextlib.suppress(OSError):
            old.unlink()
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- what errors about the state file say ---------------------------------------------------


def where_backup(state: Path) -> str:
    """'Latest backup: …' or that there is none yet; and what moving the file away costs."""
    latest = latest_backup(state)
    found = (
        f"Latest backup: {latest} (to restore: copy it to {state.name}, deleting "
        f"{state.name}-wal and -shm first if present)"
        if latest
        else f"No backup of it yet ({backup_dir(state)}/ gets one before each send)"
    )
    return f"{found}. Moving {state.name} away forgets every unsubscribe in it."


def state_error(state: Path, problem: str) -> NewsletterError:
    """An error about the state file: the problem, then where the backup is (one line)."""
    return NewsletterError(f"{state}: {problem} {where_backup(state)}")


def os_fault(state: Path) -> OSError | None:
    """What the operating system says when the state file and its companions are opened for
    writing the way SQLite does, or None when it does not object (root ignores permissions)."""
    for path in (state, state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm")):
        try:
            if path.exists() or path.is_symlink():
                os.close(os.open(path, os.O_RDWR))
            else:  # SQLite creates the -wal and -shm beside it: can this folder take a file?
                probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
                os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                probe.unlink()
        except OSError as err:
            return err
    return None


def fault_error(state: Path, err: BaseException) -> NewsletterError:
    """A permission or disk error: named with the OS's words, never 'move it away'."""
    cause = err if isinstance(err, OSError) else (os_fault(state) or err)
    return state_error(
        state,
        f"cannot use the state file: {cause}. This is a permission or disk problem, not a damaged "
        "file: fix the folder's permissions or free disk space, then run again.",
    )


def unusable_error(state: Path, err: sqlite3.Error) -> NewsletterError:
    """SQLite refused the file: an OS fault (its own message), else not a state file."""
    if (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF in OS_FAULT_CODES:
        return fault_error(state, err)
    return state_error(state, f"not a usable newsletter state file ({err}); it is kept as it is.")


# --- before opening ---------------------------------------------------------------------------


def refuse_lost(state: Path) -> None:
    """Refuse a state file that has lost its contents: empty, or gone while backups remain.

    An empty file is never one of ours (a new one appears whole), so it was truncated or
    replaced; a missing file with backups beside it was deleted or moved. Creating a new file in
    either case would forget every unsubscribe and resend to everyone.
    """
    try:
        st = os.stat(state)
    except FileNotFoundError:
        latest = latest_backup(state)
        if latest is not None:
            raise NewsletterError(
                f"{state}: the state file is missing, but {backup_dir(state)}/ holds backups of "
                f"it. Restore the latest: cp {latest} {state} (or point [paths] state at the "
                f"file); to start over and forget every unsubscribe, move {backup_dir(state)} "
                "away too."
            ) from None
        return
    except OSError as err:
        raise fault_error(state, err) from None
    if not stat.S_ISREG(st.st_mode):
        raise fault_error(state, IsADirectoryError(21, os.strerror(21), str(state)))
    if st.st_size == 0:
        raise state_error(
            state,
            "the state file is empty (0 bytes): its contacts, deliveries and unsubscribes are "
            "gone, so it is not used.",
        )


def publish(built: Path, state: Path) -> None:
    """Put a newly built state file in place, whole or not at all (another opener may win)."""
    _fsync(built)
    try:
        os.link(built, state)
    except FileExistsError:
        pass  # another process created it meanwhile: theirs is as new as ours
    except OSError:
        # A file system without hard links (FAT on a USB stick, some network mounts): a rename,
        # which could only replace a file another opener made in the same instant.
        if not state.exists():
            os.rename(built, state)
    finally:
        with contextlib.suppress(OSError):
            built.unlink()
    with contextlib.suppress(OSError):
        _fsync(state.parent)


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
