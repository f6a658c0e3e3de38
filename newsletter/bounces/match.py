"""Which member and which alert a report is about: VERP token, else our Message-ID, else address.

Anyone can write to the bounce address, so how a report was tied to a member matters: the VERP
token (signed) and a Message-ID the journal gave one member's message are proof that the report
answers *that* message; the failed address alone is a claim, recorded and shown, and acted on
only after `[bounces] address_only_limit` of them on distinct alerts (policy.py).

The VERP token is `<first 10 hex digits of the member's public id>-<8 characters of
HMAC-SHA256(public id, alert id)>`, keyed by NEWSLETTER_SECRET: 19 characters, case-insensitive
(some servers lower-case local parts), naming the member (by the random public id links carry,
never the row number or the address) and, through its MAC, the alert, which is not in clear.
Two members sharing the 10 digits (40 bits) is harmless: the MAC tells them apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from newsletter.config import Config
from newsletter.contacts import Contacts
from newsletter.journal import Journal

MAC_CHARS = 8
ID_CHARS = 10
_TOKEN = re.compile(r"([0-9a-f]{%d})-([a-z2-7]{%d})" % (ID_CHARS, MAC_CHARS))  # noqa: UP031

VERP, MESSAGE_ID, SEND, ADDRESS, NONE = "verp", "message_id", "send", "address", "none"
TIED = (VERP, MESSAGE_ID, SEND)  # proof the report answers one of our messages to the member


def _mac(secret: str, public_id: str, alert_id: str) -> str:
    key = hashlib.sha256(b"newsletter/verp\0" + secret.encode()).digest()
    digest = hmac.new(key, f"{public_id}\0{alert_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()  # 40 bits, 8 characters


def verp_token(secret: str, public_id: str, alert_id: str) -> str:
    """The token for one member's copy of one alert."""
    return f"{public_id[:ID_CHARS].lower()}-{_mac(secret, public_id, alert_id)}"


def bounce_address(cfg: Config, fallback: str) -> str:
    """`[bounces] address`, else the From address (`fallback`): the envelope sender."""
    return cfg.bounces.address or fallback


def envelope_sender(cfg: Config, base: str, alert_id: str, public_id: str) -> str:
    """A member's envelope sender: `base`, or with `[bounces] verp` `local+TOKEN@domain`."""
    if not cfg.bounces.verp or not public_id:
        return base
    local, _, domain = base.rpartition("@")
    return f"{local}+{verp_token(cfg.require_secret(), public_id, alert_id)}@{domain}"


@dataclass(frozen=True, slots=True)
class Match:
    """A member a report is about, how we know, and the alert it answers (None: not known)."""

    contact_id: int
    key: str
    email: str
    alert_id: str | None
    by: str


class Matcher:
    """Ties reports to members through one journal; caches what a whole mailbox needs once."""

    def __init__(self, journal: Journal, cfg: Config) -> None:
        self.journal = journal
        self.secret = cfg.secret
        base = cfg.bounces.address or _from_address(cfg)
        local, _, domain = base.rpartition("@")
        self.local, self.domain = local.lower(), domain.lower()
        self._alerts: list[str] | None = None  # most recently sent first

    def alerts(self) -> list[str]:
        if self._alerts is None:
            rows = self.journal._read(
                "SELECT alert_id, max(coalesce(sent_at, updated_at)) AS t FROM deliveries "
                "GROUP BY alert_id ORDER BY t DESC"
            )
            self._alerts = [a for a, _ in rows]
        return self._alerts

    def by_verp(self, candidates: list[tuple[str, str, str]]) -> Match | None:
        """The member and alert a valid token names (only tokens on our bounce address)."""
        if not self.secret:
            return None
        for local, token, domain in candidates:
            if (local, domain) != (self.local, self.domain):
                continue
            m = _TOKEN.fullmatch(token)
            if not m:
                continue
            prefix = m.group(1)
            # The unique index on public_id serves the prefix as a range.
            rows = self.journal._read(
                "SELECT id, public_id FROM contacts WHERE public_id >= ? AND public_id < ?",
                (prefix, prefix + "g"),
            )
            for contact_id, public_id in rows:
                for alert_id in self.alerts():
                    if hmac.compare_digest(_mac(self.secret, public_id, alert_id), m.group(2)):
                        contact = Contacts(self.journal).get(contact_id)
                        if contact is not None:
                            return Match(contact.id, contact.key, contact.email, alert_id, VERP)
        return None

    def by_message_id(self, message_ids: list[str]) -> Match | None:
        """The delivery whose Message-ID the report quotes."""
        if not message_ids:
            return None
        marks = ", ".join("?" * len(message_ids[:50]))
        rows = self.journal._read(
            "SELECT d.alert_id, d.key, d.email, d.contact_id FROM deliveries d "
            f"WHERE d.message_id IN ({marks}) AND d.contact_id IS NOT NULL LIMIT 1",
            message_ids[:50],
        )
        if not rows:
            return None
        alert_id, key, addr, contact_id = rows[0]
        return Match(contact_id, key, addr, alert_id, MESSAGE_ID)

    def by_address(self, address: str) -> Match | None:
        """A member with this address; the alert is the last one sent to them, if any (so
        that "distinct alerts" means something for reports tied by the address alone)."""
        if not address:
            return None
        contact = Contacts(self.journal).find(address)
        if contact is None:
            return None
        alert_id = None
        for a in self.alerts():
            if self.journal._read(
                "SELECT 1 FROM deliveries WHERE alert_id = ? AND key = ? AND status = 'sent'",
                (a, contact.key),
            ):
                alert_id = a
                break
        return Match(contact.id, contact.key, contact.email, alert_id, ADDRESS)

    def match(
        self, verp: list[tuple[str, str, str]], message_ids: list[str], address: str
    ) -> Match | None:
        """The strongest tie there is, or None (unmatched: counted, listed, never guessed)."""
        return self.by_verp(verp) or self.by_message_id(message_ids) or self.by_address(address)


def _from_address(cfg: Config) -> str:
    from newsletter.message import sender_address

    return sender_address(cfg)[1]
