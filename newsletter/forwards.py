"""Forward counts: how many friends each forward reached, for the daily caps; never who.

One table of the journal's file (`forwards`, schema in journal.py), kept apart from the Journal
class so that each table has its own small class over the Journal's one connection (its lock
and its write transactions): `Forwards(journal).reserve(...)`. The pages and their caps are
newsletter/web/forward.py.

What is kept, and why: the forwarding contact (the per-member cap), a keyed hash of the client's
IP address (the per-address cap; HMAC with the Journal's IP key, erased after IP_HASH_KEEP), the
alert, the number of friends and when. Friends' addresses are never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from newsletter import journal as journal_module
from newsletter.journal import _ts, key_of

if TYPE_CHECKING:
    from newsletter.journal import Journal

# Hashed IPs are only needed for the daily forward cap; after this they are erased, counts kept.
IP_HASH_KEEP = timedelta(days=2)


class Forwards:
    """The forward counts of one state file, over its Journal's connection."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def _ip_hash(self, ip: str) -> str:
        return hmac.new(self.journal._ip_key, ip.strip().encode(), hashlib.sha256).hexdigest()[:32]

    def record(self, contact_id: int | None, ip: str, alert_id: str, count: int) -> None:
        """Count `count` friends forwarded to by a contact (or an unknown sender) from `ip`."""
        if count < 0:
            raise ValueError("count must be 0 or more")
        t = journal_module.now()
        with self.journal._tx() as db:
            _insert(db, contact_id, self._ip_hash(ip) if ip else None, alert_id, count, t)

    def reserve(
        self,
        contact_id: int,
        ip: str,
        alert_id: str,
        friends: Iterable[str],
        caps: tuple[int, int],
        at: datetime | None = None,
    ) -> tuple[int | None, str, set[str]]:
        """Check the daily caps and count `friends` against them, in one write transaction.

        Returns (reservation, "", friends who unsubscribed), or (None, "limit_token" or
        "limit_ip", set()) when the forward would pass `caps` (per contact, per IP) in the 24
        hours before `at` (default now; the web pages pass their own clock). Checking and
        counting apart let 50 parallel submissions all pass the check before any was counted;
        here the second waits for the first's count. Every friend counts, those who
        unsubscribed too (they get nothing): the caps must not let anyone test addresses for
        free. `settle` lowers the count to what went out.
        """
        friends = list(friends)
        t = journal_module.now() if at is None else at
        since = t - timedelta(days=1)
        ip_hash = self._ip_hash(ip) if ip else None
        with self.journal._tx() as db:
            q = "SELECT coalesce(sum(count), 0) FROM forwards WHERE created_at >= ? AND "
            used = db.execute(q + "contact_id = ?", (_ts(since), contact_id)).fetchone()[0]
            if used + len(friends) > caps[0]:
                return None, "limit_token", set()
            if ip_hash is not None:
                used = db.execute(q + "ip_hash = ?", (_ts(since), ip_hash)).fetchone()[0]
                if used + len(friends) > caps[1]:
                    return None, "limit_ip", set()
            reservation = _insert(db, contact_id, ip_hash, alert_id, len(friends), t)
            # In the same transaction as the count: the suppression table read in SQL here,
            # not through suppressions.Suppressions (a read of its own).
            unsubscribed = {
                f
                for f in friends
                if db.execute("SELECT 1 FROM suppressions WHERE key = ?", (key_of(f),)).fetchone()
            }
            return reservation, "", unsubscribed

    def settle(self, reservation: int, count: int) -> None:
        """Lower a reservation to the friends it really counts (copies that may have gone out,
        and friends who unsubscribed); one that counts nobody is removed, IP hash and all."""
        with self.journal._tx() as db:
            db.execute(
                "UPDATE forwards SET count = min(count, ?) WHERE id = ?", (count, reservation)
            )
            db.execute("DELETE FROM forwards WHERE id = ? AND count = 0", (reservation,))

    def since(
        self,
        contact_id: int | None = None,
        ip: str | None = None,
        since: datetime | None = None,
    ) -> int:
        """Friends forwarded to since `since` (default: 24 hours ago) by this contact and/or IP."""
        if contact_id is None and ip is None:
            raise ValueError("give contact_id, ip or both")
        since = journal_module.now() - timedelta(days=1) if since is None else since
        sql = "SELECT coalesce(sum(count), 0) FROM forwards WHERE created_at >= ?"
        params: list[object] = [_ts(since)]
        if contact_id is not None:
            sql += " AND contact_id = ?"
            params.append(contact_id)
        if ip is not None:
            sql += " AND ip_hash = ?"
            params.append(self._ip_hash(ip))
        return int(self.journal._read(sql, params)[0][0])

    def total(self, alert_id: str) -> int:
        """How many friends an alert was forwarded to, all time."""
        sql = "SELECT coalesce(sum(count), 0) FROM forwards WHERE alert_id = ?"
        return int(self.journal._read(sql, (alert_id,))[0][0])


def _insert(
    db: sqlite3.Connection,
    contact_id: int | None,
    ip_hash: str | None,
    alert_id: str,
    count: int,
    t: datetime,
) -> int | None:
    """Count one forward (inside the caller's transaction) and erase the IP hashes older than
    IP_HASH_KEEP; returns the new row's id."""
    cur = db.execute(
        "INSERT INTO forwards (contact_id, ip_hash, alert_id, count, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (contact_id, ip_hash, alert_id, count, _ts(t)),
    )
    db.execute(
        "UPDATE forwards SET ip_hash = NULL WHERE ip_hash IS NOT NULL AND created_at < ?",
        (_ts(t - IP_HASH_KEEP),),
    )
    return cur.lastrowid
