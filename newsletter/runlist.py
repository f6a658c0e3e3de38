"""A run's recipient list in a temporary SQLite table: read once, matched in SQL, never held.

A million rows as Python objects are several hundred MiB (a Recipient with its merge fields is
~400 bytes, a set of their addresses ~100 more each); in a temporary table of the state file's
connection they cost SQLite's page cache (a few MiB) and a file in the temporary folder. The
send (`campaign`) and `recipients check` stream the CSV in (recipients.scan_csv -> add), find
the repeated addresses in SQL (dedupe), and the send's plan (Journal.plan_run, into temp.plan)
is read back with the list's rows in batches of BATCH, in list order (RunPlan, Planned).

The table lives in the connection's `temp` schema, which SQLite keeps in a file (temp_store =
FILE; the OS may keep it cached) and drops with the connection; nothing of it reaches the
state file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsletter.journal import STATUSES
from newsletter.recipients import LANGUAGES, Problem, Recipient

if TYPE_CHECKING:
    from newsletter.journal import Journal

BATCH = 2_000  # rows per statement in and per read out
CACHE_KIB = 4_096  # page cache of the temporary schema
_SHARED = {s: s for s in (*LANGUAGES, *STATUSES)}  # one string per value, not one per row

# The confirmed web subscribers not suppressed (a Journal's connection), and their order (the
# oldest first): subscribers.web_recipients reads them, RunList.add_web_subscribers adds them.
WEB_SUBSCRIBERS = (
    "FROM subscribers s JOIN contacts c ON c.id = s.contact_id "
    "WHERE NOT EXISTS (SELECT 1 FROM suppressions x WHERE x.key = c.key)"
)
WEB_ORDER = "s.confirmed_at, c.id"
WEB_LANGUAGE = "coalesce(c.language_pref, s.language)"  # their choice on the language page first


# One encoder for every row (json.dumps with options makes a new one per call).
_fields_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class RunList:
    """The recipients of one run: `run(seq, line, key, email, name, lang, fields, web)`."""

    def __init__(self, db: sqlite3.Connection, lock: Any = None) -> None:
        self.db = db
        self.lock = lock if lock is not None else threading.RLock()
        self.n = 0  # rows added
        with self.lock:
            db.execute("PRAGMA temp_store = FILE")
            db.execute(f"PRAGMA temp.cache_size = -{CACHE_KIB}")
            db.execute("DROP TABLE IF EXISTS temp.run")
            db.execute(
                "CREATE TEMP TABLE run (seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, "
                "key TEXT NOT NULL, email TEXT NOT NULL, name TEXT NOT NULL, lang TEXT NOT NULL, "
                "fields TEXT NOT NULL, web INTEGER NOT NULL)"
            )

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A transaction of the temporary schema only (no lock on the state file)."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def add(self, people: Iterable[Recipient], *, web: bool = False) -> int:
        """Append recipients in their order (`web`: confirmed web subscribers, added after the
        CSV); returns how many. Repeats are kept until dedupe."""
        added = 0
        it = iter(people)
        while True:
            rows = []
            for r in it:
                rows.append(
                    (
                        self.n + len(rows),
                        r.line,
                        r.key,
                        r.email,
                        r.name,
                        r.language,
                        _fields_json(r.fields) if r.fields else "",
                        web,
                    )
                )
                if len(rows) == BATCH:
                    break
            if not rows:
                return added
            with self._tx() as db:
                db.executemany("INSERT INTO temp.run VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.n += len(rows)
            added += len(rows)

    def add_web_subscribers(self) -> int:
        """Append the confirmed web subscribers (WEB_SUBSCRIBERS; a Journal's connection only)
        after the list, as `web` rows; returns how many. One statement: no row passes through
        Python (add() would read each into a Recipient and back)."""
        with self._tx() as db:
            added = db.execute(
                "INSERT INTO temp.run (seq, line, key, email, name, lang, fields, web) "
                f"SELECT ? + row_number() OVER (ORDER BY {WEB_ORDER}) - 1, 0, c.key, c.email, "
                f"c.name, {WEB_LANGUAGE}, '', 1 {WEB_SUBSCRIBERS}",
                (self.n,),
            ).rowcount
        self.n += added
        return added

    def adopt(self, other: RunList) -> None:
        """Take another connection's list as this one's start (`campaign` reads the CSV into a
        private database while the check runs, before the state file may be opened)."""
        with other.lock, self._tx() as db:
            rows = other.db.execute("SELECT * FROM temp.run ORDER BY seq")
            while batch := rows.fetchmany(BATCH):
                db.executemany("INSERT INTO temp.run VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        self.n = max(self.n, other.n)

    def dedupe(self) -> list[Problem]:
        """Keep each address's first row (any case: the key), drop the rest; returns the CSV's
        later copies as duplicates, in line order (a web subscriber already in the CSV is no
        duplicate of the list: simply sent once)."""
        with self._tx() as db:
            db.execute("CREATE INDEX IF NOT EXISTS temp.run_key ON run (key, seq)")
            db.execute("DROP TABLE IF EXISTS temp.run_first")
            db.execute(
                "CREATE TEMP TABLE run_first AS SELECT key, min(seq) AS seq, count(*) AS n "
                "FROM run GROUP BY key HAVING n > 1"
            )
            dups = [
                Problem(line, email, f"duplicate of line {first}; sent once")
                for line, email, first in db.execute(
                    "SELECT r.line, r.email, f.line FROM temp.run_first d "
                    "JOIN temp.run r ON r.key = d.key AND r.seq > d.seq "
                    "JOIN temp.run f ON f.seq = d.seq WHERE NOT r.web ORDER BY r.seq"
                )
            ]
            db.execute(
                "DELETE FROM temp.run WHERE seq IN (SELECT r.seq FROM temp.run_first d "
                "JOIN temp.run r ON r.key = d.key AND r.seq > d.seq)"
            )
            db.execute("DROP TABLE temp.run_first")
        return dups

    def drop_web(self) -> None:
        """Leave the web subscribers out (send --csv-only)."""
        with self._tx() as db:
            db.execute("DELETE FROM temp.run WHERE web")

    def count(self, *, web: bool | None = None) -> int:
        where = "" if web is None else f" WHERE web = {int(web)}"
        return self._count(f"SELECT count(*) FROM temp.run{where}")

    def _count(self, sql: str) -> int:
        with self.lock:
            return int(self.db.execute(sql).fetchone()[0])

    def unsubscribed(self) -> int:
        """How many are suppressed in the state file (a Journal's connection only)."""
        return self._count(
            "SELECT count(*) FROM temp.run r WHERE EXISTS "
            "(SELECT 1 FROM suppressions s WHERE s.key = r.key)"
        )

    def chose_other_language(self) -> int:
        """How many chose a language other than the list's column (a Journal's connection)."""
        return self._count(
            "SELECT count(*) FROM temp.run r JOIN contacts c ON c.key = r.key "
            "WHERE c.language_pref IS NOT NULL AND c.language_pref <> r.lang"
        )

    def by_language(self) -> dict[str, int]:
        """The CSV's recipients per language, in LANGUAGES order."""
        counts = dict.fromkeys(LANGUAGES, 0)
        with self.lock:
            counts.update(
                self.db.execute("SELECT lang, count(*) FROM temp.run WHERE NOT web GROUP BY lang")
            )
        return counts


def recipient(line: int, key: str, email: str, name: str, lang: str, fields: str) -> Recipient:
    """A Recipient from its row of temp.run."""
    return Recipient(email, key, name, lang, json.loads(fields) if fields else {}, line)


@dataclass(frozen=True, slots=True)
class Planned:
    """A recipient of this run with their public id, edition language and delivery state."""

    recipient: Recipient
    # Contact.public_id, what the member's links carry (as its hex), held as its 16 bytes: a
    # 49-byte object instead of an 81-byte string, ~3 MiB less per 100,000 recipients.
    public_id: bytes
    lang: str  # the contact's stored preference, else the CSV's column
    status: str  # the state before this run ("pending" for a new one)
    attempts: int
    last_reply: str


class RunPlan:
    """A plan in temp.plan (Journal.plan_run): counts, and the rows read back in batches."""

    def __init__(self, journal: Journal, alert_id: str) -> None:
        self.journal = journal
        self.alert_id = alert_id
        self.counts = dict.fromkeys(("todo", "sent", "suppressed", "uncertain", "failed"), 0)
        with journal._lock:
            self.counts.update(journal._db.execute("SELECT cls, count(*) FROM temp.plan GROUP BY cls"))

    def rows(self, cls: str | None = None, limit: int | None = None) -> Iterator[tuple[str, Planned]]:
        """(class, Planned) in list order, those of class `cls` only if given, at most `limit`;
        read BATCH rows at a time (a send's progress and the web pages go on meanwhile)."""
        where = "p.cls = ?1 AND p.seq > ?2" if cls else "?1 IS NULL AND p.seq > ?2"
        last, left = -1, limit if limit is not None else -1
        while left != 0:
            n = BATCH if left < 0 else min(BATCH, left)
            with self.journal._lock:
                batch = self.journal._db.execute(
                    "SELECT p.seq, p.cls, r.line, r.key, r.email, r.name, r.lang, r.fields, "
                    "p.public_id, p.lang, p.status, p.attempts, p.reply "
                    f"FROM temp.plan p JOIN temp.run r ON r.seq = p.seq WHERE {where} "
                    "ORDER BY p.seq LIMIT ?3",
                    (cls, last, n),
                ).fetchall()
            if not batch:
                return
            for seq, c, line, key, email, name, rlang, fields, pid, lang, st, att, reply in batch:
                # SQLite hands out a new "es" per row: one shared string per value instead.
                lang, st = _SHARED.get(lang, lang), _SHARED.get(st, st)
                r = recipient(line, key, email, name, _SHARED.get(rlang, rlang), fields)
                yield c, Planned(r, bytes.fromhex(pid), lang, st, att, reply)
                last = seq
            left -= len(batch) if left > 0 else 0

    def todo(self, limit: int | None = None) -> Iterator[Planned]:
        """The recipients to send to, in list order (at most `limit`)."""
        return (p for _, p in self.rows("todo", limit))

    def listed(self, cls: str) -> list[tuple[str, str]]:
        """(address, last reply) of the recipients of a class (uncertain, failed: few)."""
        return [(p.recipient.email, p.last_reply) for _, p in self.rows(cls)]

    def todo_by_language(self, limit: int | None = None) -> dict[str, int]:
        """{edition language: recipients} of the first `limit` to do."""
        cap = -1 if limit is None else limit
        with self.journal._lock:
            return dict(
                self.journal._db.execute(
                    "SELECT lang, count(*) FROM (SELECT lang FROM temp.plan WHERE cls = 'todo' "
                    "ORDER BY seq LIMIT ?) GROUP BY lang",
                    (cap,),
                )
            )
