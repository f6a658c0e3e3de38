"""Contacts: the people the organisation writes to, their public ids and chosen languages.

One table of the journal's file (`contacts`, schema in journal.py), kept apart from the Journal
class so that each table has its own small class over the Journal's one connection (its lock
and its write transactions): `Contacts(journal).add(email, name)`. The send's plan creates and
reads contacts in SQL inside its own transaction (journal.plan_run), and web sign-ups create
theirs with their consent (subscribers.py); both stay there.

What is kept, and why: the address (to write to them; its key recognises it in any case), the
name (the greeting), the language they chose (their next alerts), a random public id (what
their links carry instead of the address) and when the row was made and changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from newsletter.journal import _NEW_PUBLIC_ID, _ts, key_of
from newsletter.recipients import clean_text

if TYPE_CHECKING:
    from newsletter.journal import Journal

LANGUAGES = ("es", "en")

_CONTACT = "id, key, email, name, language_pref, created_at, updated_at, public_id"


@dataclass(frozen=True, slots=True)
class Contact:
    """A person the organisation writes to; links carry public_id, never the address."""

    id: int
    key: str
    email: str
    name: str
    language_pref: str | None
    created_at: str
    updated_at: str
    public_id: str  # random, never handed out again: see journal._NEW_PUBLIC_ID


class Contacts:
    """The contacts of one state file, over its Journal's connection."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def add(self, email: str, name: str = "") -> int:
        """The contact id for `email`, created if new; a non-empty name replaces the stored one."""
        t = _ts()
        row = self.journal._write(
            "INSERT INTO contacts (key, email, name, created_at, updated_at, public_id) "
            f"VALUES (?, ?, ?, ?, ?, {_NEW_PUBLIC_ID}) "
            "ON CONFLICT (key) DO UPDATE SET email = excluded.email, "
            "name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE name END, "
            "updated_at = excluded.updated_at RETURNING id",
            (key_of(email), email.strip(), clean_text(name), t, t),
        ).fetchall()  # fetch all: the statement (and its autocommit) completes
        return int(row[0][0])

    def get(self, contact_id: int) -> Contact | None:
        """The contact with this id, or None."""
        rows = self.journal._read(f"SELECT {_CONTACT} FROM contacts WHERE id = ?", (contact_id,))
        return Contact(*rows[0]) if rows else None

    def public_id(self, contact_id: int) -> str:
        """What links to this contact carry (KeyError when there is no such contact)."""
        rows = self.journal._read("SELECT public_id FROM contacts WHERE id = ?", (contact_id,))
        if not rows:
            raise KeyError(contact_id)
        return str(rows[0][0])

    def linked(self, person: str | int, issued: float) -> Contact | None:
        """The contact a link names, or None when this state file has no such person.

        `person` is a contact's public id. An int is a link made before public ids (a row
        number): honoured only for a contact that was in this file when the link was signed
        (`issued`), since a replaced state file hands the same numbers to other people.
        """
        if isinstance(person, str):
            rows = self.journal._read(
                f"SELECT {_CONTACT} FROM contacts WHERE public_id = ?", (person,)
            )
        else:
            # Link times are whole seconds: a contact made in the same second as its link.
            signed = _ts(datetime.fromtimestamp(int(issued) + 1, UTC))
            rows = self.journal._read(
                f"SELECT {_CONTACT} FROM contacts WHERE id = ? AND created_at < ?",
                (person, signed),
            )
        return Contact(*rows[0]) if rows else None

    def find(self, email: str) -> Contact | None:
        """The contact with this address (any case), or None."""
        rows = self.journal._read("SELECT id FROM contacts WHERE key = ?", (key_of(email),))
        return self.get(rows[0][0]) if rows else None

    def set_language(self, contact_id: int, lang: str) -> bool:
        """Record the contact's language for the next sends; False when there is no such contact."""
        if lang not in LANGUAGES:
            raise ValueError(f"language must be one of {LANGUAGES}, not {lang!r}")
        t = _ts()
        cur = self.journal._write(
            "UPDATE contacts SET language_pref = ?, language_set_at = ?, updated_at = ? "
            "WHERE id = ?",
            (lang, t, t, contact_id),
        )
        return cur.rowcount == 1

    def language_prefs(self) -> dict[str, str]:
        """{address key: language} for every contact who chose one."""
        sql = "SELECT key, language_pref FROM contacts WHERE language_pref IS NOT NULL"
        return dict(self.journal._read(sql))
