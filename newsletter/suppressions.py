"""The suppression list: addresses never to send to, with why and since when.

One table of the journal's file (`suppressions`, schema in journal.py), kept apart from the
Journal class so that each table has its own small class over the Journal's one connection (its
lock and its write transactions): `Suppressions(journal).add(email, reason)`. The send's plan
and workers read the table directly in SQL (journal.plan_run, pool); bounce handling's stronger
verdicts are newsletter/bounces/policy.py.

What is kept, and why: the address (to recognise it in any later list, any case), a reason as
written by whoever suppressed it (a member's one-click, a bounce's verdict, an import), its kind
(what `recipients export` shows), the evidence of a bounce or complaint, and when. Nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from newsletter.journal import _ts, key_of
from newsletter.recipients import clean_text

if TYPE_CHECKING:
    from newsletter.journal import Journal

KINDS = ("unsubscribed", "bounced", "complained", "suppressed")


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address never to send to: who, why, since when."""

    key: str
    email: str
    reason: str
    created_at: str
    kind: str = "suppressed"  # unsubscribed | bounced | complained | suppressed (by hand)
    evidence: str = ""  # for a bounce or complaint: status code and diagnostic


class Suppressions:
    """The suppression list of one state file, over its Journal's connection."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def add(
        self, email: str, reason: str = "", kind: str = "unsubscribed", evidence: str = ""
    ) -> bool:
        """Never send to `email` again; False when it already was suppressed (reason kept).

        `kind` (KINDS) is what `recipients export` shows as the status; the default is a
        member's own unsubscribe (the public pages), `newsletter suppress` says "suppressed".
        """
        return self.add_many([(email, reason)], kind=kind, evidence=evidence) == 1

    def add_many(
        self, items: Iterable[tuple[str, str]], kind: str = "unsubscribed", evidence: str = ""
    ) -> int:
        """Suppress (address, reason) pairs in one transaction; returns how many were new."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        t = _ts()
        with self.journal._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO suppressions (key, email, reason, created_at, kind, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (
                    (key_of(e), e.strip(), clean_text(r), t, kind, clean_text(evidence))
                    for e, r in items
                ),
            )
            return db.total_changes - before

    def remove(self, email: str) -> bool:
        """Resubscribe `email`; False when it was not suppressed."""
        sql = "DELETE FROM suppressions WHERE key = ?"
        return self.journal._write(sql, (key_of(email),)).rowcount == 1

    def has(self, email: str) -> bool:
        """True when `email` (any case) must not be sent to."""
        sql = "SELECT 1 FROM suppressions WHERE key = ?"
        return bool(self.journal._read(sql, (key_of(email),)))

    def get(self, email: str) -> Suppression | None:
        """Why and since when `email` is suppressed, or None."""
        rows = self.journal._read(
            "SELECT key, email, reason, created_at, kind, evidence FROM suppressions "
            "WHERE key = ?",
            (key_of(email),),
        )
        return Suppression(*rows[0]) if rows else None

    def rows(self) -> list[Suppression]:
        """Every suppression, oldest first."""
        return [
            Suppression(*row)
            for row in self.journal._read(
                "SELECT key, email, reason, created_at FROM suppressions ORDER BY created_at, key"
            )
        ]

    def keys(self) -> set[str]:
        """Every suppressed address key."""
        return {k for (k,) in self.journal._read("SELECT key FROM suppressions")}

    def counts(self) -> dict[str, int]:
        """{reason: n} over every suppressed address of the file."""
        sql = "SELECT reason, count(*) FROM suppressions GROUP BY reason"
        return dict(self.journal._read(sql))
