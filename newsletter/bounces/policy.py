"""What bounces do: record each one once, then decide who is suppressed and why.

The decision, per member, from everything recorded about them (so reading the same message
twice, or in another order, decides the same):
- a complaint tied to one of our messages: suppressed at once, for good ("complained");
- hard bounces on `hard_limit` distinct alerts (default 1): suppressed ("bounced");
- soft bounces on `soft_limit` distinct alerts (default 3) within `soft_days` (default 30):
  suppressed ("bounced");
- refusals of the sender: recorded and reported, never counted against the member;
- reports tied by the failed address alone count, like the others, only once there are
  `address_only_limit` of them (default 2) on distinct alerts (forged bounces, see match.py).
An address already suppressed keeps its first reason, except that a complaint replaces a bounce
or an unsubscribe (it is the stronger fact, and "complained" is never mailed again).

Stored, per report about one recipient: when it was read, its kind, the member and alert it was
tied to (or none), how, the status code and the server's diagnostic, the recipient's domain.
Unmatched reports keep no address. This module uses the Journal's connection (journal.py keeps
the schema and its migrations).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from newsletter import journal as journal_module
from newsletter.bounces.classify import COMPLAINT, HARD, SENDER, SOFT, classify
from newsletter.bounces.match import ADDRESS, SEND, TIED
from newsletter.config import Bounces
from newsletter.contacts import Contacts
from newsletter.journal import Journal, _ts, key_of
from newsletter.recipients import clean_text

EVIDENCE_MAX = 300


@dataclass(frozen=True, slots=True)
class Event:
    """One report about one recipient, as recorded."""

    fingerprint: str
    source: str  # smtp | mail
    kind: str  # hard | soft | sender | complaint
    key: str  # the member's address key ("" when unmatched)
    contact_id: int | None
    alert_id: str | None
    matched_by: str
    status: str
    diagnostic: str
    remote: str
    category: str = ""  # sender-side cause (classify.ADVICE)


@dataclass(frozen=True, slots=True)
class Decision:
    """A member to suppress, with the suppression's kind, reason and evidence."""

    email: str
    kind: str  # bounced | complained
    reason: str
    evidence: str


def fingerprint(identity: str, address: str, kind: str) -> str:
    """One report about one recipient: the same however often it is read."""
    return hashlib.sha256(f"{identity}\0{address.lower()}\0{kind}".encode()).hexdigest()[:32]


def record(journal: Journal, events: Iterable[Event]) -> list[Event]:
    """Store the events not stored before, in one transaction; returns the new ones."""
    new: list[Event] = []
    t = _ts()
    with journal._tx() as db:
        for e in events:
            cur = db.execute(
                "INSERT INTO bounces (fingerprint, received_at, source, kind, key, contact_id, "
                "alert_id, matched_by, status, diagnostic, remote, category) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO NOTHING",
                (
                    e.fingerprint,
                    t,
                    e.source,
                    e.kind,
                    e.key,
                    e.contact_id,
                    e.alert_id,
                    e.matched_by,
                    e.status,
                    clean_text(e.diagnostic)[:EVIDENCE_MAX],
                    e.remote,
                    e.category,
                ),
            )
            if cur.rowcount == 1:
                new.append(e)
    return new


def decide(journal: Journal, limits: Bounces, contact_ids: Iterable[int]) -> list[Decision]:
    """Who of these members must be suppressed now, from all that is recorded about them."""
    since = _ts(journal_module.now() - timedelta(days=limits.soft_days))
    out: list[Decision] = []
    for contact_id in sorted(set(contact_ids)):
        contact = Contacts(journal).get(contact_id)
        if contact is None:
            continue
        rows = journal._read(
            "SELECT kind, alert_id, matched_by, received_at, status, diagnostic, fingerprint "
            "FROM bounces WHERE contact_id = ? AND kind <> ? ORDER BY id",
            (contact_id, SENDER),
        )
        tied = [r for r in rows if r[2] in TIED]
        by_address = [r for r in rows if r[2] == ADDRESS]
        # Only reports that answer a known alert count: one about a member never mailed names
        # none, and counting each as "its own alert" let two forged reports suppress anyone.
        if len({r[1] for r in by_address if r[1]}) >= limits.address_only_limit:
            tied += by_address
        decision = _decide(contact.email, tied, limits, since)
        if decision is not None:
            out.append(decision)
    return out


def _evidence(row: tuple) -> str:
    _, alert_id, matched_by, received_at, status, diagnostic, _ = row
    how = {
        "verp": "VERP token",
        "message_id": "Message-ID",
        "send": "refused at send time",
        "address": "address only",
    }.get(matched_by, matched_by)
    text = " ".join(x for x in (status, diagnostic) if x) or "no diagnostic"
    return f"{text} ({how}; alert {alert_id or '?'}; read {received_at[:10]})"[:EVIDENCE_MAX]


def _decide(email: str, rows: list[tuple], limits: Bounces, since: str) -> Decision | None:
    complaints = [r for r in rows if r[0] == COMPLAINT]
    if complaints:
        return Decision(email, "complained", "complained (spam report)", _evidence(complaints[-1]))
    hard = [r for r in rows if r[0] == HARD]
    n = len({r[1] or r[6] for r in hard})
    if n >= limits.hard_limit:
        return Decision(
            email,
            "bounced",
            f"bounced: address gone ({n} hard bounce{'s' * (n != 1)})",
            _evidence(hard[-1]),
        )
    soft = [r for r in rows if r[0] == SOFT and r[3] >= since]
    n = len({r[1] or r[6] for r in soft})
    if n >= limits.soft_limit:
        return Decision(
            email,
            "bounced",
            f"bounced: {n} soft bounces on distinct alerts in {limits.soft_days} days",
            _evidence(soft[-1]),
        )
    return None


def suppress(journal: Journal, decisions: Iterable[Decision]) -> list[Decision]:
    """Apply the decisions; returns those that changed something (new, or now "complained")."""
    done: list[Decision] = []
    t = _ts()
    with journal._tx() as db:
        for d in decisions:
            cur = db.execute(
                "INSERT INTO suppressions (key, email, reason, created_at, kind, evidence) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "kind = excluded.kind, reason = excluded.reason, evidence = excluded.evidence, "
                "created_at = excluded.created_at "
                "WHERE excluded.kind = 'complained' AND suppressions.kind <> 'complained'",
                (key_of(d.email), d.email, d.reason, t, d.kind, clean_text(d.evidence)),
            )
            if cur.rowcount == 1:
                done.append(d)
    return done


# --- send-time refusals ------------------------------------------------------------------------

_REPLY = re.compile(r"^(?:gave up after \d+ attempts: )?([45]\d\d)\b(.*)$", re.S)
_ENHANCED = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def send_failure_event(alert_id: str, key: str, contact_id: int | None, reply: str) -> Event | None:
    """The event a failed delivery's last reply stands for; None when it is no SMTP refusal
    (a message that could not be built, a bad address)."""
    m = _REPLY.match(reply.strip())
    if not m:
        return None
    code, text = m.group(1), m.group(2).strip()
    enhanced = _ENHANCED.search(text)
    status = enhanced.group(0) if enhanced else code
    verdict = classify(status, f"{code} {text}", temporary=code.startswith("4"))
    kind = verdict.kind
    if reply.startswith("gave up") and kind == HARD:
        kind = SOFT  # only 4xx were seen: the address was never said to be gone
    return Event(
        fingerprint=f"smtp:{alert_id}:{key}",
        source="smtp",
        kind=kind,
        key=key,
        contact_id=contact_id,
        alert_id=alert_id,
        matched_by=SEND,
        status=status,
        diagnostic=f"{code} {text}",
        remote=key.rpartition("@")[2],
        category=verdict.category,
    )


def record_send_failures(journal: Journal, limits: Bounces, alert_id: str) -> list[Decision]:
    """Classify the alert's failed deliveries as bounces (a 5xx "user unknown" suppresses the
    address for the next alerts); idempotent, so it runs after every send of the alert."""
    events = []
    for d in journal.rows(alert_id, ["failed"]):
        e = send_failure_event(alert_id, d.key, d.contact_id, d.last_reply)
        if e is not None:
            events.append(e)
    new = record(journal, events)
    return suppress(journal, decide(journal, limits, [e.contact_id for e in new if e.contact_id]))
