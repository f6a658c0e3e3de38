"""The journal: one SQLite file (`[paths] state`) of contacts, deliveries, suppressions, forwards.

This module holds the file (schema, migrations, the one connection and its transactions) and
the deliveries; a table with rules of its own has its own small class over that connection:
the contacts are newsletter/contacts.py (`Contacts(journal)`), the suppression list
newsletter/suppressions.py (`Suppressions(journal)`), the forward counts
newsletter/forwards.py (`Forwards(journal)`).

A delivery is in flight on disk before its bytes go to SMTP and `sent` only after the server's
250, so a run killed at any point leaves nothing that looks sent but was not; rows still
`in_flight` on the next run are *uncertain*: reported, resent only when asked.

A send does not mark its recipients here one by one: each of its connections keeps a flight log
(flightlog.FlightLog, beside this file): one write and one fdatasync per message, K connections in
parallel. The send copies the logs in as it goes (apply_flight, not fsync'd: the logs are) and,
durably, when it ends; opening the file copies in the logs a crashed send left (recover).
Whoever was in flight then is uncertain. A mark survives a power cut ("the laptop dies"); an
outcome written after it may not, and the delivery then reads as uncertain, never as unsent.

Durability otherwise: WAL, so every acknowledged write survives a kill -9; suppression,
language and contacts also survive a power cut (`synchronous=FULL`, one fsync).

Threads: one connection, guarded by a lock (`check_same_thread=False`). SQLite lets one writer in
at a time anyway; with a connection per thread the others would sleep-poll on the file lock,
while a Python lock hands over at once and in order. Other processes (`newsletter serve`
beside a `send`) wait up to BUSY_TIMEOUT on SQLite's own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter import statefile
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter.runlist import RunList, RunPlan

SCHEMA_VERSION = 4  # the base schema is version 1; MIGRATIONS take a file from there
STATUSES = ("pending", "in_flight", "sent", "retry", "failed")
BUSY_TIMEOUT = 10.0  # seconds another process may hold the write lock before we give up
# The reply the outbox records (deliver.OutboxTransport): a copy written there reached nobody.
OUTBOX_REPLY = "250 written to "

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,            -- the address, lower case: identity
    email TEXT NOT NULL,                 -- as last written in a recipient list
    name TEXT NOT NULL DEFAULT '',
    language_pref TEXT CHECK (language_pref IN ('es', 'en')),
    language_set_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE deliveries (
    alert_id TEXT NOT NULL,
    key TEXT NOT NULL,
    contact_id INTEGER REFERENCES contacts (id),
    email TEXT NOT NULL,
    lang TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'in_flight', 'sent', 'retry', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    seq INTEGER NOT NULL,                -- position in the recipient list, for stable listings
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    sent_at TEXT,
    PRIMARY KEY (alert_id, key)
) WITHOUT ROWID;
CREATE INDEX deliveries_status ON deliveries (alert_id, status);
CREATE TABLE suppressions (
    key TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE forwards (
    id INTEGER PRIMARY KEY,
    contact_id INTEGER REFERENCES contacts (id),
    ip_hash TEXT,                        -- keyed hash, erased after IP_HASH_KEEP
    alert_id TEXT NOT NULL,
    count INTEGER NOT NULL CHECK (count >= 0),
    created_at TEXT NOT NULL
);
CREATE INDEX forwards_contact ON forwards (contact_id, created_at);
CREATE INDEX forwards_ip ON forwards (ip_hash, created_at);
"""

# A new contact's public id: 128 random bits (SQLite's generator, seeded by the OS). It needs
# to be unique and never made again, not secret: tokens are signed.
_NEW_PUBLIC_ID = "lower(hex(randomblob(16)))"

# Upgrades in order: version -> the SQL that takes a file at version - 1 to it, keeping its data.
# A file is upgraded in place, in one transaction, when it is opened.
MIGRATIONS: dict[int, str] = {
    # Web subscribers (newsletter/subscribers.py): the consent of each confirmed one, the exact
    # consent wording they agreed to, and the sign-up caps (keyed hashes, erased after the window).
    2: """
CREATE TABLE consent_texts (
    version TEXT PRIMARY KEY,            -- hash of the language and the wording
    lang TEXT NOT NULL,
    text TEXT NOT NULL,
    first_used_at TEXT NOT NULL
);
CREATE TABLE subscribers (
    contact_id INTEGER PRIMARY KEY REFERENCES contacts (id),
    language TEXT NOT NULL CHECK (language IN ('es', 'en')),
    source TEXT NOT NULL,                -- form, forward, archive, embed, import
    consent_version TEXT NOT NULL REFERENCES consent_texts (version),
    requested_at TEXT NOT NULL,          -- the form was sent
    confirmed_at TEXT NOT NULL           -- the button in the confirmation email was pressed
);
CREATE TABLE signup_caps (
    kind TEXT NOT NULL CHECK (kind IN ('address', 'network')),
    hash TEXT NOT NULL,                  -- keyed hash of the address or client network
    mailed INTEGER NOT NULL,             -- 1: this request got a confirmation email
    created_at TEXT NOT NULL
);
CREATE INDEX signup_caps_hash ON signup_caps (kind, hash, created_at);
""",
    # Links name a person by a random public id, never the row number, which a new state file
    # hands out again (an old link then reached another member). Existing contacts get one; an
    # insert without one (any code, the sqlite3 shell) gets one from the trigger.
    3: f"""
ALTER TABLE contacts ADD COLUMN public_id TEXT;
UPDATE contacts SET public_id = {_NEW_PUBLIC_ID} WHERE public_id IS NULL;
CREATE UNIQUE INDEX contacts_public_id ON contacts (public_id);
CREATE TRIGGER contacts_public_id AFTER INSERT ON contacts WHEN NEW.public_id IS NULL
BEGIN
    UPDATE contacts SET public_id = {_NEW_PUBLIC_ID} WHERE id = NEW.id;
END;
""",
    # After the send (issue 13, newsletter/bounces/): why each address is suppressed (kind and
    # evidence), the bounces and complaints read, and the Message-ID index that ties one to the
    # delivery it answers.
    4: """
ALTER TABLE suppressions ADD COLUMN kind TEXT NOT NULL DEFAULT 'suppressed'
    CHECK (kind IN ('unsubscribed', 'bounced', 'complained', 'suppressed'));
ALTER TABLE suppressions ADD COLUMN evidence TEXT NOT NULL DEFAULT '';
UPDATE suppressions SET kind = 'unsubscribed' WHERE reason IN ('one-click', 'unsubscribe page');
CREATE INDEX deliveries_message_id ON deliveries (message_id) WHERE message_id IS NOT NULL;
CREATE TABLE bounces (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,    -- one report about one recipient: read twice, kept once
    received_at TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('smtp', 'mail')),
    kind TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'sender', 'complaint')),
    key TEXT NOT NULL DEFAULT '',        -- the member's address key, '' when none was matched
    contact_id INTEGER REFERENCES contacts (id),
    alert_id TEXT,
    matched_by TEXT NOT NULL
        CHECK (matched_by IN ('verp', 'message_id', 'send', 'address', 'none')),
    status TEXT NOT NULL DEFAULT '',     -- enhanced status code (5.1.1) or SMTP reply code
    diagnostic TEXT NOT NULL DEFAULT '',
    remote TEXT NOT NULL DEFAULT '',     -- the recipient's domain (who refused)
    category TEXT NOT NULL DEFAULT ''    -- sender-side: authentication, blocklist, content, ...
);
CREATE INDEX bounces_contact ON bounces (contact_id, kind);
CREATE INDEX bounces_alert ON bounces (alert_id, kind);
""",
}


def now() -> datetime:
    """The current time, UTC. The one clock of the journal: tests monkeypatch it."""
    return datetime.now(UTC)


def _ts(dt: datetime | None = None) -> str:
    """A fixed-width UTC timestamp, so text comparison in SQL is time order."""
    dt = now() if dt is None else dt
    if dt.tzinfo is None:  # a naive time is taken as UTC, like everything stored here
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timestamp() -> str:
    """Now, as the journal writes times (comparable as text)."""
    return _ts()


def key_of(email: str) -> str:
    """The identity of an address: trimmed, lower case."""
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one recipient: where it stands."""

    alert_id: str
    key: str
    email: str
    contact_id: int | None
    lang: str
    status: str
    attempts: int
    last_reply: str
    message_id: str | None
    created_at: str
    updated_at: str
    sent_at: str | None


def _regular(path: Path) -> bool:
    """True for a regular file (not a directory, a link or anything else); False if gone."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


class Journal:
    """The state file. A context manager; safe to share between sender threads."""

    def __init__(
        self, path: str | Path, *, secret: str | None = None, readonly: bool = False
    ) -> None:
        """Open (creating if needed) the journal at `path`.

        `secret` keys the hash of forwarders' IP addresses (pass cfg.secret); without it a
        random key stored in the file is used, which hides IPs from a casual look only.
        `readonly`: look without writing a byte (the preview); the file must exist.
        A file that has lost its contents, or a permission or disk fault, is one clear error
        (newsletter/statefile.py), never a new empty file.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        self._send_lock: int | None = None
        statefile.refuse_lost(self.path)
        if readonly and not self.path.exists():
            raise NewsletterError(f"{self.path}: no state file yet (nothing was sent from it).")
        try:
            if not readonly and not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._create()
            mode = "ro" if readonly else "rw"  # never "rwc": only _create makes a file
            self._db = sqlite3.connect(
                f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode={mode}",
                uri=True,
                timeout=BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,
            )
        except OSError as err:
            raise statefile.fault_error(self.path, err) from None
        except sqlite3.Error as err:
            raise statefile.unusable_error(self.path, err) from None
        try:
            self._setup()
        except sqlite3.Error as err:
            self._db.close()
            raise statefile.unusable_error(self.path, err) from None
        except NewsletterError:
            self._db.close()
            raise
        ip_key = secret or self._meta("ip_salt")
        self._ip_key = ip_key.encode()
        if not readonly and self.flight_paths():
            self.recover()

    def _create(self) -> None:
        """Build a new state file beside its place, then link it in.

        It appears whole or not at all, so a file at the path is never one still being made:
        an empty one there was truncated or replaced, and is refused (statefile.refuse_lost).
        Concurrent openers each build one; the first link wins, the others use it.
        """
        built = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            # Owner-only from its first byte (every member's address; SQLite gives its -wal and
            # -journal the same mode): an empty file is what SQLite makes a new database of.
            os.close(os.open(built, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            self._db = sqlite3.connect(built, isolation_level=None, check_same_thread=False)
            try:
                self._setup(new=True)
            finally:
                self._db.close()
            statefile.publish(built, self.path)
        finally:
            for leftover in (built, built.with_name(built.name + "-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink()

    # --- plumbing -------------------------------------------------------------------------

    def _setup(self, new: bool = False) -> None:
        """Settings of the connection; a new file's schema; an older file's migrations.

        `new`: the file is one _create is building. Otherwise a file at version 0 is not ours
        (an empty SQLite file, or another program's) and is refused, never filled in.
        """
        db = self._db
        if self.readonly:
            db.execute("PRAGMA query_only = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            return  # an older file is read as it is: the columns a reader needs are in version 1
        db.execute("PRAGMA foreign_keys = ON")
        # Switching a new file to WAL needs it to itself, and SQLite answers "locked" at once,
        # without its busy wait, while another opener (a web thread, a send) is at it too.
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        db.execute("PRAGMA synchronous = FULL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if not new:
            self._check_version(version)
        if 0 < version < SCHEMA_VERSION:
            self.backup("before-upgrade")  # the file as it was, kept first
        if version < SCHEMA_VERSION:
            with self._tx():
                # Another process (or a web request's thread) may have done it meanwhile.
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    self._run_script(_SCHEMA)
                    db.execute(
                        "INSERT INTO meta (name, value) VALUES ('ip_salt', ?)",
                        (secrets.token_hex(32),),
                    )
                    version = 1
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    self._run_script(MIGRATIONS[step])
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_version(self, version: int) -> None:
        """Refuse a file written by a newer newsletter, or one that is not a newsletter file."""
        if version > SCHEMA_VERSION:
            raise statefile.state_error(
                self.path,
                f"written by a newer newsletter (schema {version}, this one knows "
                f"{SCHEMA_VERSION}). Upgrade newsletter.",
            )
        if version == 0:
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            raise statefile.state_error(
                self.path,
                "an SQLite file that is not a newsletter journal"
                + (" (another program's tables)" if tables else " (empty, no tables)")
                + "; it is kept as it is. Point [paths] state at the newsletter's file.",
            )

    def backup(self, label: str) -> Path:
        """A consistent copy of the state file in its backups folder (statefile.make_backup):
        before and after each send, before an upgrade of the file. Returns its path."""
        with self._lock:
            return statefile.make_backup(self._db, self.path, label)

    def _run_script(self, sql: str) -> None:
        """Statements one by one inside the open transaction (executescript would commit it).

        A trigger's body has semicolons of its own: pieces are joined until SQLite calls the
        statement complete.
        """
        statement = ""
        for piece in sql.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                if statement.strip(" \n;"):
                    self._db.execute(statement)
                statement = ""

    @contextlib.contextmanager
    def _tx(self, commit: bool = True, fsync: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed before it returns (rolled back on error or if not
        `commit`); without `fsync` it survives a crash of the process but not of the machine."""
        with self._lock:
            if not fsync:  # the level cannot change inside a transaction
                self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as err:
                    raise self._busy(err) from None
                try:
                    yield self._db
                    self._db.execute("COMMIT" if commit else "ROLLBACK")
                except BaseException as err:
                    with contextlib.suppress(sqlite3.Error):  # a full disk rolled it back already
                        self._db.execute("ROLLBACK")
                    if isinstance(err, sqlite3.OperationalError):
                        raise self._busy(err) from None
                    raise
            finally:
                if not fsync:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("PRAGMA synchronous = FULL")

    def _write(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        """One statement in autocommit mode: committed when it returns."""
        with self._lock:
            try:
                return self._db.execute(sql, params)
            except sqlite3.OperationalError as err:
                raise self._busy(err) from None

    def _read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _busy(self, err: sqlite3.OperationalError) -> Exception:
        """A write refused: another process holding the lock, or a permission or disk fault
        (one clear line each); anything else as it is."""
        if "locked" in str(err) or "busy" in str(err):
            return statefile.state_error(
                self.path,
                f"another newsletter process kept the state file locked for {BUSY_TIMEOUT:.0f} "
                "s. Try again.",
            )
        if (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF in statefile.OS_FAULT_CODES:
            return statefile.fault_error(self.path, err)
        return err

    def _meta(self, name: str) -> str:
        return self._read("SELECT value FROM meta WHERE name = ?", (name,))[0][0]

    def close(self) -> None:
        """Release the send lock (if held) and close the file."""
        with self._lock:
            if self._send_lock is not None:
                os.close(self._send_lock)
                self._send_lock = None
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one send at a time ----------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The file a running `send` holds locked (the OS frees it when the process dies)."""
        return self.path.with_name(self.path.name + ".send-lock")

    def acquire_send_lock(self) -> None:
        """Claim the right to send from this state file; NewsletterError if a send is running.

        Two runs of the same alert at once would both send the pending rows; this prevents it.
        flock is released by the kernel on exit, even on kill -9, so a crash leaves no stale lock.
        """
        if self._send_lock is not None:
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise statefile.state_error(
                self.path,
                f"another `newsletter send` (pid {other}) is using it. Wait for it to finish; "
                "run `newsletter status ALERT` to watch it.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._send_lock = fd

    def send_running(self) -> bool:
        """True when some process (this one included) holds the send lock."""
        if self._send_lock is not None:
            return True
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # --- flight logs: each sender connection's own durable record ---------------------------

    def flight_path(self, n: int) -> Path:
        """Connection n's flight log during a send (a file beside the state file)."""
        from newsletter.flightlog import flight_path  # flightlog imports this module

        return flight_path(self.path, n)

    def flight_paths(self) -> list[Path]:
        """The flight logs beside the state file. Only regular files: a flight log is never
        anything else, so a directory of that name (someone's mkdir) holds nothing to recover,
        and it must not stop every command; a send that needs the name refuses it
        (statefile.flight_log_room)."""
        prefix = self.path.name + ".flight-"
        with contextlib.suppress(OSError):
            return sorted(
                p
                for p in self.path.parent.iterdir()
                if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit() and _regular(p)
            )
        return []

    def recover(self) -> int:
        """Bring the deliveries up to date from the flight logs a send left; returns the rows.

        A send's connections record their marks and outcomes in flight logs (FlightLog) and the
        send copies them in here as it goes and when it ends. After a crash they hold what this
        file may lack, above all who was in flight: those become uncertain here, never pending.
        Only with the send lock (a running send owns its logs); durable before the logs go.
        """
        from newsletter.flightlog import read_flight  # flightlog imports this module

        held = self._send_lock is not None
        if not held:
            try:
                self.acquire_send_lock()
            except NewsletterError:
                return 0  # a send is running: its logs are its own
        try:
            rows = [row for p in self.flight_paths() for row in read_flight(p)[0]]
            self.apply_flight(rows, durable=True)
            self.remove_flight_logs()
            return len(rows)
        finally:
            if not held and self._send_lock is not None:
                os.close(self._send_lock)
                self._send_lock = None

    def remove_flight_logs(self) -> None:
        """After apply_flight(…, durable=True) has put all they hold on disk."""
        for p in self.flight_paths():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def apply_flight(self, rows: Iterable[tuple], *, durable: bool = False) -> None:
        """Copy flight-log rows into the deliveries, oldest first; a row never overwrites a
        newer state (another connection's later attempt) nor a delivery already sent.

        `durable`: on disk when this returns, with every earlier change (the commit writes a
        page even without rows, so its fsync covers the changes copied in before).
        """
        # A mark and the outcome after it make one row (one UPDATE instead of two).
        latest: dict[tuple[str, str], tuple] = {}
        for row in sorted(rows, key=lambda r: r[7]):
            before = latest.get((row[0], row[1]))
            if before is not None:
                row = (
                    *row[:3],
                    max(row[3], before[3]),
                    row[4] if row[4] is not None else before[4],
                    *row[5:8],
                    row[8] if row[8] is not None else before[8],
                )
            latest[row[0], row[1]] = row
        with self._tx(fsync=durable) as db:
            db.executemany(
                "UPDATE deliveries SET status = ?3, attempts = max(attempts, ?4), "
                "message_id = coalesce(?5, message_id), lang = ?6, last_reply = ?7, "
                "updated_at = ?8, sent_at = coalesce(?9, sent_at) "
                "WHERE alert_id = ?1 AND key = ?2 AND status <> 'sent' AND updated_at <= ?8",
                sorted(latest.values(), key=lambda r: r[7]),
            )
            if durable:
                db.execute("UPDATE meta SET value = value WHERE name = 'ip_salt'")

    # --- deliveries -----------------------------------------------------------------------

    def run_list(self) -> RunList:
        """An empty list for this run (runlist.RunList) in this connection's temporary schema."""
        from newsletter.runlist import RunList

        return RunList(self._db, self._lock)

    def plan_run(
        self,
        alert_id: str,
        *,
        retry_failed: bool = False,
        retry_uncertain: bool = False,
        dry_run: bool = False,
        smtp: bool = False,
    ) -> RunPlan:
        """Sort the run's recipients (the list in temp.run, run_list) into to-do and skipped,
        recording new ones as pending, without holding them: the sorting is one SQL statement
        into temp.plan, and the to-do list is read back in batches (RunPlan).
        Contacts are created or updated (name, address as written); the edition language is the
        contact's stored preference over the list's column. Already sent and suppressed
        recipients are skipped; `in_flight` ones (a run died) only with `retry_uncertain`,
        `failed` ones only with `retry_failed`.
        A dry run writes nothing: new people get a stand-in public id. `smtp`: the send goes
        to a relay, so a copy only written to the outbox (a trial) is still to do."""
        from newsletter.runlist import RunPlan  # runlist imports this module

        t = _ts()
        # Each recipient's class: sent earlier, suppressed, uncertain, failed, or to do.
        sort = (
            "CREATE TEMP TABLE plan AS SELECT r.seq, "
            "coalesce(c.language_pref, r.lang) AS lang, coalesce(d.status, 'pending') AS status, "
            "coalesce(d.attempts, 0) AS attempts, coalesce(d.last_reply, '') AS reply, "
            f"d.lang AS old_lang, coalesce(c.public_id, {_NEW_PUBLIC_ID}) AS public_id, CASE "
            "WHEN d.status = 'sent' AND NOT (?4 AND d.last_reply LIKE ?5) THEN 'sent' "
            "WHEN s.key IS NOT NULL THEN 'suppressed' "
            "WHEN d.status = 'in_flight' AND NOT ?2 THEN 'uncertain' "
            "WHEN d.status = 'failed' AND NOT ?3 THEN 'failed' ELSE 'todo' END AS cls "
            "FROM temp.run r LEFT JOIN contacts c ON c.key = r.key "
            "LEFT JOIN deliveries d ON d.alert_id = ?1 AND d.key = r.key "
            "LEFT JOIN suppressions s ON s.key = r.key ORDER BY r.seq"
        )
        args = (alert_id, retry_uncertain, retry_failed, smtp, OUTBOX_REPLY + "%")
        if dry_run:
            with self._lock:
                self._db.execute("DROP TABLE IF EXISTS temp.plan")
                self._db.execute(sort, args)
            return RunPlan(self, alert_id)
        with self._tx() as db:
            db.execute(
                "INSERT INTO contacts (key, email, name, created_at, updated_at, public_id) "
                f"SELECT key, email, name, ?, ?, {_NEW_PUBLIC_ID} FROM temp.run WHERE true "
                "ON CONFLICT (key) DO UPDATE SET email = excluded.email, "
                "name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE name END, "
                "updated_at = excluded.updated_at",
                (t, t),
            )
            db.execute("DROP TABLE IF EXISTS temp.plan")
            db.execute(sort, args)
            db.execute("CREATE UNIQUE INDEX temp.plan_seq ON plan (cls, seq)")
            db.execute(
                "UPDATE deliveries SET lang = p.lang FROM temp.plan p JOIN temp.run r "
                "ON r.seq = p.seq WHERE deliveries.alert_id = ? AND deliveries.key = r.key "
                "AND p.cls = 'todo' AND p.old_lang IS NOT NULL AND p.old_lang <> p.lang",
                (alert_id,),
            )
            db.execute(  # a trial copy in the outbox: pending again, so a mark can take it
                "UPDATE deliveries SET status = 'pending', last_reply = '' FROM temp.plan p "
                "JOIN temp.run r ON r.seq = p.seq WHERE deliveries.alert_id = ? "
                "AND deliveries.key = r.key AND p.cls = 'todo' AND deliveries.status = 'sent'",
                (alert_id,),
            )
            # New ones: to do, and no delivery row yet (old_lang is that row's NOT NULL lang).
            # Not read from deliveries itself: an INSERT that reads its own table is staged in
            # a temporary copy first (a third of the plan's time at 10,000).
            after = db.execute(
                "SELECT coalesce(max(seq), 0) FROM deliveries WHERE alert_id = ?", (alert_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO deliveries (alert_id, key, contact_id, email, lang, status, seq, "
                "created_at, updated_at) "
                "SELECT ?1, r.key, c.id, r.email, p.lang, 'pending', ?3 + r.seq + 1, ?2, ?2 "
                "FROM temp.plan p JOIN temp.run r ON r.seq = p.seq "
                "JOIN contacts c ON c.key = r.key "
                "WHERE p.cls = 'todo' AND p.old_lang IS NULL ORDER BY r.key",
                (alert_id, t, after),
            )
        return RunPlan(self, alert_id)

    def states(self, alert_id: str) -> dict[str, str]:
        """{address key: status} for the alert."""
        return dict(
            self._read("SELECT key, status FROM deliveries WHERE alert_id = ?", (alert_id,))
        )

    def counts(self, alert_id: str) -> dict[str, int]:
        """{status: number of recipients}, every status present."""
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(
            self._read(
                "SELECT status, count(*) FROM deliveries WHERE alert_id = ? GROUP BY status",
                (alert_id,),
            )
        )
        return counts

    def rows(self, alert_id: str, statuses: str | Iterable[str] = STATUSES) -> list[Delivery]:
        """The alert's deliveries in these states, in recipient-list order."""
        wanted = [statuses] if isinstance(statuses, str) else list(statuses)
        if unknown := set(wanted) - set(STATUSES):
            raise ValueError(f"unknown status {sorted(unknown)}; known: {STATUSES}")
        marks = ", ".join("?" * len(wanted))
        return [
            Delivery(*row)
            for row in self._read(
                "SELECT alert_id, key, email, contact_id, lang, status, attempts, last_reply, "
                "message_id, created_at, updated_at, sent_at FROM deliveries "
                f"WHERE alert_id = ? AND status IN ({marks}) ORDER BY seq",
                (alert_id, *wanted),
            )
        ]

    def suppressed_unsent(self, alert_id: str) -> dict[str, str]:
        """{address key: status} of the alert's pending, retry and failed deliveries whose
        address is suppressed now: no send will go to them (the plan and the workers skip
        them), whatever the row says. In-flight ones are left out: they may have arrived."""
        return dict(
            self._read(
                "SELECT d.key, d.status FROM deliveries d JOIN suppressions s ON s.key = d.key "
                "WHERE d.alert_id = ? AND d.status IN ('pending', 'retry', 'failed')",
                (alert_id,),
            )
        )

    def alerts(self) -> list[str]:
        """Every alert id with deliveries recorded."""
        return [a for (a,) in self._read("SELECT DISTINCT alert_id FROM deliveries ORDER BY 1")]

    def sent_alerts(self, alert_ids: Iterable[str]) -> set[str]:
        """Those of `alert_ids` that went out to someone (a delivery is `sent`): what the public
        archive may show. One indexed look-up per id, however long the journal."""
        return {
            a
            for (a,) in self._read(
                "SELECT value FROM json_each(?) WHERE EXISTS (SELECT 1 FROM deliveries "
                "WHERE alert_id = value AND status = 'sent')",
                (json.dumps(list(alert_ids)),),
            )
        }

    def unsubscribed_after(self, alert_id: str) -> dict[str, int]:
        """{reason: n} of this alert's recipients who unsubscribed after it was sent to them
        (the unsubscribes it drew; bounces and complaints have their own lines); counts only,
        no addresses."""
        return dict(
            self._read(
                "SELECT s.reason, count(*) FROM deliveries d JOIN suppressions s ON s.key = d.key "
                "WHERE d.alert_id = ? AND d.status = 'sent' AND d.sent_at IS NOT NULL "
                "AND s.kind = 'unsubscribed' AND s.created_at >= d.sent_at GROUP BY s.reason",
                (alert_id,),
            )
        )
