"""The link model: one place decides what forward / language / unsubscribe / view links are.

With `[web] base_url` set they point at the public pages (`newsletter serve`) and carry an opaque
signed token: the contact's random public id from the journal (never the address, and never the
row number, which a replaced state file gives to someone else). Without it the email still works:
forward and language switch become `mailto:` links with a prefilled subject and body.
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
import struct
import time
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Protocol
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from itsdangerous.signer import HMACAlgorithm

from newsletter import tokens
from newsletter.config import Config
from newsletter.errors import NewsletterError

# How long a token is honoured. Unsubscribe must keep working well past CAN-SPAM's 30 days.
MAX_AGE = {
    "forward": 90 * 86400,
    "language": 365 * 86400,
    "unsubscribe": 5 * 365 * 86400,
}
PURPOSES = tuple(MAX_AGE)
# A token signed later than now by more than this is refused (a clock set wrong, or a forgery
# made with a leaked secret and dated to outlive its age limit).
CLOCK_SKEW = 300
LANG_NAMES = {"es": "español", "en": "English"}


class BadToken(Exception):
    """A token that is tampered, foreign, malformed or expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "expired" or "invalid"


@dataclass(frozen=True)
class TokenData:
    """What a link names: a person, an alert and its language, and when it was signed.

    `person` is the contact's public id; an int is a row number, from links made before public
    ids (see contacts.Contacts.linked).
    """

    person: str | int
    alert_id: str
    lang: str
    issued: float = 0.0


@functools.lru_cache(maxsize=32)
def _serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=f"newsletter/{purpose}")


@functools.lru_cache(maxsize=32)
def _hmac(secret: str, purpose: str) -> hmac.HMAC:
    """A pre-keyed HMAC for (secret, purpose), with the key itsdangerous derives for it.

    The serializer's own signer derives the key (django-concat: SHA-1 of salt + b"signer" +
    secret) and names the digest, so a change of either in itsdangerous follows here; each call
    of `make_token` copies this object instead of deriving the key and keying an HMAC again.
    """
    signer = _serializer(secret, purpose).make_signer()
    if type(signer.algorithm) is not HMACAlgorithm:  # what the copy below reproduces
        raise TypeError(f"unexpected itsdangerous signing algorithm {signer.algorithm!r}")
    return hmac.new(signer.derive_key(), digestmod=signer.digest_method)


# itsdangerous's compact JSON (`_CompactJSON.dumps`): no spaces, non-ASCII kept as UTF-8.
_json_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_b64 = base64.urlsafe_b64encode
_pack_ts = struct.Struct(">Q").pack  # itsdangerous.encoding.int_to_bytes, before the lstrip
_last_ts: tuple[int, bytes] = (-1, b"")  # (timestamp, b"." + its base64): one per second


def make_token(secret: str, purpose: str, person: str | int, alert_id: str, lang: str) -> str:
    """An opaque, signed, timestamped token for one person (public id), alert and language.

    Byte for byte what `TimestampSigner.sign` makes of the serializer's uncompressed payload
    (which `URLSafeTimedSerializer.dumps` also makes whenever zlib does not shorten it, as for
    any realistic three values; `loads` reads compressed and uncompressed payloads alike), at
    ~3.0 µs a call instead of ~9.2 µs: the derived key and a keyed HMAC are made once per
    secret and purpose and copied per call, the JSON is formatted without `json.dumps`, and
    the timestamp's base64 is reused within the same second.
    """
    return make_tokens(secret, (purpose,), person, alert_id, lang)[0]


def make_tokens(
    secret: str, purposes: tuple[str, ...], person: str | int, alert_id: str, lang: str
) -> list[str]:
    """make_token for several purposes of the same person, alert and language (a member's
    forward, language and unsubscribe links): the payload and its base64 are made once, only
    the signatures differ."""
    for purpose in purposes:
        if purpose not in MAX_AGE:
            raise ValueError(f"unknown token purpose {purpose!r}")
    global _last_ts
    if type(person) is str and type(alert_id) is str and type(lang) is str:
        doc = f"[{encode_basestring(person)},{encode_basestring(alert_id)},{encode_basestring(lang)}]"
    else:  # int, bool or str subclasses...: let the encoder decide, as itsdangerous would
        doc = _json_encode([person, alert_id, lang])
    ts = int(time.time())  # TimestampSigner.get_timestamp, looked up per call like it does
    last = _last_ts  # one read, so that another thread's update cannot mix two seconds
    if last[0] != ts:
        last = _last_ts = (ts, b"." + _b64(_pack_ts(ts).lstrip(b"\x00")).rstrip(b"="))
    value = _b64(doc.encode("utf-8")).rstrip(b"=") + last[1]
    signed = []
    for purpose in purposes:
        mac = _hmac(secret, purpose).copy()
        mac.update(value)
        signed.append((value + b"." + _b64(mac.digest()).rstrip(b"=")).decode("ascii"))
    return signed


def read_token(secret: str, purpose: str, token: str, *, now: float | None = None) -> TokenData:
    """Check a token's signature, purpose and age; raise BadToken otherwise.

    A token dated more than CLOCK_SKEW in the future is invalid, not merely young.
    """
    s = _serializer(secret, purpose)
    now = time.time() if now is None else now
    try:
        data, signed_at = s.loads(token, return_timestamp=True)
    except (BadSignature, UnicodeDecodeError, ValueError):
        raise BadToken("invalid") from None
    issued = signed_at.timestamp()
    if issued - now > CLOCK_SKEW:
        raise BadToken("invalid")
    if now - issued > MAX_AGE[purpose]:
        raise BadToken("expired")
    if (
        not isinstance(data, list)
        or len(data) != 3
        or type(data[0]) not in (str, int)  # not bool
        or not isinstance(data[1], str)
        or data[2] not in LANG_NAMES
    ):
        raise BadToken("invalid")
    return TokenData(data[0], data[1], data[2], issued)


def base_url(cfg: Config) -> str:
    return cfg.web.base_url.rstrip("/")


def archive_url(cfg: Config, alert_id: str, lang: str) -> str:
    """The public, token-free URL of an alert edition; "" without a base URL."""
    return _archive_url(base_url(cfg), alert_id, lang)


@functools.lru_cache(maxsize=64)
def _archive_url(base: str, alert_id: str, lang: str) -> str:
    """archive_url for a base URL (one per edition, asked for once per member's copy)."""
    return f"{base}/a/{quote(alert_id)}/{lang}" if base else ""


_MEMBER = ("forward", "language", "unsubscribe")  # the purposes of a member's links


def mailto(address: str, subject: str, body: str = "") -> str:
    """A mailto: URL with a prefilled subject and body (RFC 6068 percent-encoding)."""
    q = f"subject={quote(subject, safe='')}"
    if body:
        q += f"&body={quote(body, safe='')}"
    return f"mailto:{address}?{q}"


def member_links(
    cfg: Config,
    *,
    alert_id: str,
    lang: str,
    person: str | None,
    subject: str,
    forward_body: str,
    language_subject: str,
    unsubscribe_subject: str,
) -> dict[str, str]:
    """Token → URL for one member's copy.

    `forward_body` is what a `mailto:` forward prefills (used without a base URL);
    `language_subject`/`unsubscribe_subject` are the localised subjects of the mailto fallbacks.
    """
    b = base_url(cfg)
    if b:
        if person is None:
            raise ValueError("a contact's public id is needed for links with tokens")
        secret = cfg.require_secret()
        forward, language, unsubscribe = make_tokens(secret, _MEMBER, person, alert_id, lang)
        return {
            tokens.FORWARD_URL: f"{b}/f/{forward}",
            tokens.LANGUAGE_URL: f"{b}/l/{language}",
            tokens.UNSUBSCRIBE_URL: f"{b}/u/{unsubscribe}",
            tokens.VIEW_URL: _archive_url(b, alert_id, lang),
        }
    return {
        tokens.FORWARD_URL: mailto("", subject, forward_body),
        tokens.LANGUAGE_URL: (
            mailto(cfg.sender.language_mailto, language_subject)
            if cfg.sender.language_mailto
            else ""
        ),
        tokens.UNSUBSCRIBE_URL: (
            mailto(cfg.sender.unsubscribe_mailto, unsubscribe_subject)
            if cfg.sender.unsubscribe_mailto
            else ""
        ),
        tokens.VIEW_URL: "",
    }


class EditionStrings(Protocol):
    """What an edition (render.Edition) gives the link model: its id, language and wording."""

    alert_id: str
    lang: str
    subject: str
    forward_body: str
    language_subject: str
    unsubscribe_subject: str


def edition_links(cfg: Config, edition: EditionStrings, person: str | None) -> dict[str, str]:
    """member_links for one member's copy of `edition` (its subject and mailto wording).

    `person` is the member's public id (Contact.public_id).
    """
    return member_links(
        cfg,
        alert_id=edition.alert_id,
        lang=edition.lang,
        person=person,
        subject=edition.subject,
        forward_body=edition.forward_body,
        language_subject=edition.language_subject,
        unsubscribe_subject=edition.unsubscribe_subject,
    )


def list_unsubscribe_headers(cfg: Config, unsubscribe_url: str) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers: an https URL for one-click POST, plus mailto when configured."""
    parts = []
    if unsubscribe_url.startswith("https://") or unsubscribe_url.startswith("http://127.0.0.1"):
        parts.append(f"<{unsubscribe_url}>")
    if cfg.sender.unsubscribe_mailto:
        parts.append(f"<mailto:{cfg.sender.unsubscribe_mailto}?subject=unsubscribe>")
    if not parts:
        return {}
    headers = {"List-Unsubscribe": ", ".join(parts)}
    if parts[0].startswith("<http"):
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def require_base_url(cfg: Config) -> str:
    """The base URL, or a clear error naming the setting."""
    b = base_url(cfg)
    if not b:
        raise NewsletterError(
            f"{cfg.source}: [web] base_url is not set; the public pages need it "
            "(e.g. https://alerts.example.org)."
        )
    return b
