"""The flight log: one sender connection's own durable record of its marks and outcomes.

A send does not mark its recipients in the state file one by one: each of its connections keeps
a flight log (FlightLog, a file beside the state file, `flight_path`): one write and one
fdatasync per message, K connections in parallel. The journal copies the logs in
(Journal.apply_flight of `read_flight`'s rows) as the send goes and, durably, when it ends;
opening the state file copies in the logs a crashed send left (Journal.recover).

This module is the file's format (records, checksums, the zeros ahead) and its writer and
reader; what the rows mean for the deliveries is the journal's. The clock is the journal's
(`journal.now`, called through the module: the one clock tests monkeypatch).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from newsletter import journal
from newsletter.recipients import clean_text

REPLY_MAX = 500  # characters of an SMTP reply worth keeping
_US = "\x1f"  # ASCII unit separator: between a flight record's fields (never in one)


class FlightLog:
    """One sender connection's own durable record: its in-flight marks and its outcomes.

    Each connection of a send appends to a small file of its own, so K connections fsync in
    parallel instead of queueing for the state file's one writer, and a mark costs one write and
    one fdatasync of already-allocated blocks (~40 µs of CPU here, against ~90 µs for an SQLite
    commit). `mark` appends the connection's last outcome together with the next recipient's
    in-flight mark and returns once both are on disk: the message's bytes go out only then.

    `mark_many(rows)` appends several marks in one write and returns at once; a sync thread puts
    them on disk (one fdatasync for the whole batch: group commit) while the connection carries
    earlier messages, and `wait(end)` returns once they are. A send marks a batch of recipients
    ahead this way when the disk is slow beside the server (sender._Sender), so a message never
    waits for a sync of its own and one sync covers several messages; every message's mark is
    still on disk before its first byte goes out. Outcomes between batches go out with `put()`
    (written, not synced: an outcome lost to a power cut leaves its recipient uncertain, never
    pending).

    Records: 4-byte length, 4-byte CRC-32, then the row's fields (FLIGHT_FIELDS) in UTF-8,
    separated by U+001F (none can hold one: addresses and ids are checked, replies are cleaned). The file is filled
    with zeros ahead of the writes (CHUNK at a time), so a sync never has to change its size; a
    reader stops at the first zero length or bad checksum, which is where a crash cut the log.
    The state file is brought up to date from these logs (Journal.apply_flight) while the send
    runs, at its end, and after a crash.
    """

    CHUNK = 1 << 20
    SYNC_CLAMP = 0.05  # seconds: one stalled sync counts no more than this in sync_time

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = 0  # where the next record goes
        self._size = 0
        self._grow()
        self._outcome: bytes = b""
        self._synced = 0  # bytes known to be on disk
        self._want = 0  # bytes the sync thread must put on disk (the end of the last mark)
        self._syncing = False  # an fdatasync is under way (this thread or the sync thread)
        self._error: OSError | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None  # started by the first kick (mark_many)
        self._closing = False
        self.sync_time = 0.0  # seconds one fdatasync takes here (moving average)

    def _grow(self) -> None:
        os.pwrite(self._fd, bytes(self.CHUNK), self._size)
        self._size += self.CHUNK
        os.fsync(self._fd)  # the size and the zeros, once per CHUNK; marks need only fdatasync
        with contextlib.suppress(OSError):  # the file's name in its folder, once
            if self._size == self.CHUNK:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)

    @staticmethod
    def _record(*fields: str) -> bytes:
        body = _US.join(fields).encode()
        return struct.pack("<II", len(body), zlib.crc32(body)) + body

    def outcome(
        self, alert_id: str, key: str, status: str, reply: str, lang: str, attempts: int = 0
    ) -> None:
        """A message's outcome (sent, retry, failed; pending: marked ahead, never sent):
        written with the next mark (or flush).

        Times are kept as POSIX seconds and the reply as the server sent it (cut to
        REPLY_MAX); read_flight formats and cleans them, off the sender's path.
        """
        t = repr(journal.now().timestamp())
        sent_at = t if status == "sent" else ""
        reply = reply[:REPLY_MAX].replace(_US, " ")
        # No message id: the mark before it holds it (coalesce on apply); attempts count when
        # the message was refused before any mark (max on apply).
        self._outcome += self._record(
            alert_id, key, status, str(attempts), "", lang, reply, t, sent_at
        )

    def mark(
        self,
        alert_id: str,
        key: str,
        message_id: str,
        lang: str,
        attempts: int,
        *,
        wait: bool = True,
    ) -> int:
        """Mark in flight (with the pending outcome); returns the log's end after it, once it
        is on disk (`wait=False`: at once, the sync thread puts it there; see `wait`)."""
        t = repr(journal.now().timestamp())
        record = self._record(
            alert_id, key, "in_flight", str(attempts), message_id, lang, "", t, ""
        )
        end = self._append(self._outcome + record)
        self._outcome = b""
        if wait:
            self.wait(end)
        else:
            self._kick(end)
        return end

    def mark_many(self, rows: Iterable[tuple[str, str, str, str, int]]) -> int:
        """Mark several recipients in flight, (alert_id, key, message_id, lang, attempts) each,
        in one write with the pending outcomes; returns the log's end after them at once. The
        sync thread puts them on disk with one fdatasync; `wait(end)` before any of their data.
        """
        t = repr(journal.now().timestamp())
        data = self._outcome + b"".join(
            self._record(a, k, "in_flight", str(n), mid, lang, "", t, "")
            for a, k, mid, lang, n in rows
        )
        end = self._append(data)
        self._outcome = b""
        self._kick(end)
        return end

    def put(self) -> None:
        """Write the pending outcomes now, without a sync (see the class's docstring)."""
        if self._outcome:
            self._append(self._outcome)
            self._outcome = b""

    def synced(self, end: int) -> bool:
        """True when the log is on disk up to `end` (a mark's end from mark)."""
        return self._synced >= end

    def wait(self, end: int) -> None:
        """Return once the log is on disk up to `end` (a sync under way is waited for, else
        this thread syncs); OSError if a sync failed."""
        if self._synced >= end:
            return
        with self._cond:
            while self._synced < end:
                if self._error is not None:
                    raise self._error
                if self._syncing:
                    self._cond.wait()
                else:
                    self._sync_locked()

    def _sync_locked(self) -> None:
        """One fdatasync of everything written so far; called with self._cond held, which it
        lets go of during the sync."""
        self._syncing = True
        target = self._end
        start = time.monotonic()
        self._cond.release()
        try:
            os.fdatasync(self._fd)
        except OSError as err:
            error: OSError | None = err
        else:
            error = None
        finally:
            self._cond.acquire()
            self._syncing = False
        took = min(time.monotonic() - start, self.SYNC_CLAMP)
        self.sync_time = took if not self.sync_time else self.sync_time + (took - self.sync_time) / 8
        if error is not None:
            self._error = error
        else:
            self._synced = max(self._synced, target)
        self._cond.notify_all()

    def _kick(self, end: int) -> None:
        """Have the sync thread put the log on disk up to `end` (one kick per batch)."""
        with self._cond:
            self._want = max(self._want, end)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._sync_loop, name="flight-sync", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _sync_loop(self) -> None:
        """The sync thread: whenever records are written and not on disk, sync them."""
        with self._cond:
            while self._error is None:
                if self._synced < self._want and not self._syncing:
                    self._sync_locked()
                elif self._closing:
                    return
                else:
                    self._cond.wait()

    def flush(self) -> None:
        """Write a pending outcome alone (the connection is done, or stops)."""
        if self._outcome:
            with contextlib.suppress(OSError):
                self.wait(self._append(self._outcome))
                self._outcome = b""

    def _append(self, data: bytes) -> int:
        while self._end + len(data) + 8 > self._size:  # keep a zero length after the last one
            self._grow()
        os.pwrite(self._fd, data, self._end)
        self._end += len(data)
        return self._end

    def close(self) -> None:
        self.flush()
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
        os.close(self._fd)


FLIGHT_FIELDS = "alert_id, key, status, attempts, message_id, lang, last_reply, updated_at, sent_at"


_ts_second: tuple[int, str] = (-1, "")  # the last second _ts_posix formatted, and its text


def _ts_posix(t: float) -> str:
    """_ts for POSIX seconds, without a datetime (the parent formats two per message); the
    date and time of day once per second, not once per record."""
    global _ts_second
    second, micros = divmod(round(t * 1_000_000), 1_000_000)
    last = _ts_second  # one read: another thread's update cannot mix two seconds
    if last[0] != second:
        last = _ts_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{last[1]}.{micros:06d}Z"


def flight_path(state: Path, n: int) -> Path:
    """Connection n's flight log during a send from the state file `state`."""
    return state.with_name(f"{state.name}.flight-{n}")


def read_flight(path: Path, offset: int = 0) -> tuple[list[tuple], int]:
    """A flight log's rows from byte `offset` on, and the offset after the last whole record.

    Stops at the first zero length, bad checksum or cut record: where the writer stopped.
    """
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    rows: list[tuple] = []
    at = 0
    while at + 8 <= len(data):
        size, crc = struct.unpack_from("<II", data, at)
        body = data[at + 8 : at + 8 + size]
        if not size or len(body) < size or zlib.crc32(body) != crc:
            break
        try:
            a, k, status, attempts, mid, lang, reply, t, sent_at = body.decode().split(_US)
            row = (
                a,
                k,
                status,
                int(attempts),
                mid or None,
                lang,
                clean_text(reply)[:REPLY_MAX],
                _ts_posix(float(t)),
                _ts_posix(float(sent_at)) if sent_at else None,
            )
        except (ValueError, TypeError, OverflowError, OSError):
            break
        rows.append(row)
        at += 8 + size
    return rows, offset + at
