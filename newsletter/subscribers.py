"""Web subscribers: double opt-in sign-ups, their consent on record, and the caps against abuse.

Someone fills in the sign-up form (`GET /s`, or a copy pasted into the organisation's site by
`newsletter subscribe-form`); a confirmation email carries a signed link valid CONFIRM_DAYS; the
link's page shows a button, and only its POST confirms (mail scanners GET every link). Nothing
about an unconfirmed sign-up is stored but the caps' keyed hashes: the link itself carries the
address, name, language and source, signed, so an address someone else typed in leaves no trace
here once the 24 hours of its cap have passed.

What is kept about a confirmed subscriber, and why (the consent record, table `subscribers`):
- the address, name and language in `contacts`, as for every member (to write to them);
- when the form was sent and when the button was pressed (the two halves of double opt-in);
- the source: form, forward (the invitation in a forwarded copy), archive, embed (a form on the
  organisation's site), import — to tell where members come from and to answer "how did you
  get my address?";
- the version of the consent wording they agreed to, with that wording in `consent_texts`
  (what they were told is on record even after the catalogs change);
- the language of that wording.
No IP address is kept in the record: the proof of consent is the confirmation from the mailbox
itself. The caps need the client's network for an hour, so `signup_caps` holds a keyed hash
(HMAC with NEWSLETTER_SECRET) of its /24 (IPv4) or /56 (IPv6) and of the address, and every
sign-up erases the rows older than their window (1 hour, 24 hours).

Caps: one confirmation email per address per 24 hours, `[subscribe] per_network_per_hour` (20)
per client network per hour; a request over a cap gets the same page and no email. The check and
the record are one write transaction, and every request writes the same rows (with `mailed` 0 or
1), so neither the answer nor its time tells whether an email went out.

Who gets no confirmation email: an address suppressed because it bounced or complained. One
who unsubscribed may join again through the same double opt-in (their new consent), but a
confirmation link older than their unsubscribe no longer counts.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import queue
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from newsletter import i18n, message, resources, tokens
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import _NEW_PUBLIC_ID, Journal, _ts, key_of
from newsletter.recipients import Recipient, clean_text

CONFIRM_DAYS = 7
CONFIRM_MAX_AGE = CONFIRM_DAYS * 86400  # seconds a confirmation link is honoured
ADDRESS_WINDOW = timedelta(hours=24)  # one confirmation email per address in this window
NETWORK_WINDOW = timedelta(hours=1)  # [subscribe] per_network_per_hour in this window
SOURCES = ("form", "forward", "archive", "embed", "import")
NAME_MAX = 100
# The consent statement: a msgid of the web catalogs (locale/<lang>/LC_MESSAGES/web.po).
CONSENT_MSGID = i18n.WEB_STRINGS["consent"]
# Suppressions that mean the mailbox must never be written to again: the kinds bounce handling
# records, and (for rows written before kinds existed) those words in the reason.
_NO_MAIL_KINDS = ("bounced", "complained")
_NO_MAIL_WORDS = ("bounce", "complain")

log = logging.getLogger(__name__)


def never_mail(reason: str, kind: str = "") -> bool:
    """True when a suppression of this kind (or, for older rows, with this reason) forbids any
    email, a confirmation included."""
    reason = reason.lower()
    return kind in _NO_MAIL_KINDS or any(word in reason for word in _NO_MAIL_WORDS)


# --- the confirmation link ----------------------------------------------------------------------


@dataclass(frozen=True)
class SignUp:
    """A sign-up as the form gave it; the confirmation link carries it, signed."""

    email: str
    name: str
    lang: str
    source: str
    requested_at: float = 0.0  # POSIX seconds: when the link was signed (the form was sent)


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="newsletter/confirm")


def make_confirm_token(secret: str, signup: SignUp, now: float) -> str:
    """The signed, timestamped payload of a confirmation link (opaque to the reader's eye only:
    it holds the address, which only goes to that address's own mailbox)."""
    s = _serializer(secret)
    payload = [signup.email, signup.name, signup.lang, signup.source]
    signer = s.make_signer()
    signer.get_timestamp = lambda: int(now)  # type: ignore[method-assign]  # the app's clock
    return signer.sign(s.dump_payload(payload)).decode("ascii")


def read_confirm_token(secret: str, token: str, now: float) -> SignUp:
    """The sign-up a link carries; `links.BadToken` when tampered, foreign or expired, or dated
    more than links.CLOCK_SKEW in the future (it would outlive CONFIRM_DAYS)."""
    from newsletter.links import CLOCK_SKEW, BadToken

    s = _serializer(secret)
    try:
        data, signed_at = s.loads(token, return_timestamp=True)
    except SignatureExpired:
        raise BadToken("expired") from None
    except (BadSignature, UnicodeDecodeError, ValueError):
        raise BadToken("invalid") from None
    at = signed_at.timestamp()
    if at - now > CLOCK_SKEW:
        raise BadToken("invalid")
    if now - at > CONFIRM_MAX_AGE:
        raise BadToken("expired")
    if (
        not isinstance(data, list)
        or len(data) != 4
        or not all(isinstance(x, str) for x in data)
        or data[2] not in i18n.LANGUAGES
        or data[3] not in SOURCES
    ):
        raise BadToken("invalid")
    return SignUp(data[0], data[1], data[2], data[3], at)


# --- the consent wording --------------------------------------------------------------------------


@dataclass(frozen=True)
class Consent:
    """The consent statement in one language, and its version (a hash of language and words)."""

    lang: str
    text: str
    version: str


def consent(cfg: Config, lang: str) -> Consent:
    """The statement as the sign-up pages show it in `lang`, from the web catalog."""
    text = i18n.translations(cfg, lang, "web").gettext(CONSENT_MSGID) % {"org": cfg.org.name}
    version = hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()[:16]
    return Consent(lang, text, version)


# --- state: caps, confirmation, the list ---------------------------------------------------------


def network_of(ip: str) -> str:
    """The client's network as the cap counts it: an IPv4 /24, an IPv6 /56 ("" if no address).

    One household or office gets one allowance; an attacker cannot multiply it by taking the
    next address of the same block.
    """
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 56
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _hash(j: Journal, kind: str, value: str) -> str:
    # The journal's IP key (NEWSLETTER_SECRET, else a random key in the file); kind-separated.
    return hmac.new(j._ip_key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]


def request_confirmation(j: Journal, email: str, ip: str, per_network: int, when: datetime) -> bool:
    """Record a sign-up request; True when a confirmation email may go to `email`.

    One write transaction: the caps are checked and the request counted together, so two
    requests at once cannot both pass. Every call writes the same two rows (mailed 0 or 1).
    """
    key = key_of(email)
    addr_hash = _hash(j, "address", key)
    net = network_of(ip)
    net_hash = _hash(j, "network", net) if net else ""
    with j._tx(fsync=False) as db:  # caps: losing the last second to a power cut is harmless
        db.execute(
            "DELETE FROM signup_caps WHERE (kind = 'address' AND created_at < ?) "
            "OR (kind = 'network' AND created_at < ?)",
            (_ts(when - ADDRESS_WINDOW), _ts(when - NETWORK_WINDOW)),
        )
        blocked = db.execute(
            "SELECT reason, kind FROM suppressions WHERE key = ?", (key,)
        ).fetchall()
        by_address = db.execute(
            "SELECT count(*) FROM signup_caps WHERE kind = 'address' AND hash = ? "
            "AND mailed AND created_at >= ?",
            (addr_hash, _ts(when - ADDRESS_WINDOW)),
        ).fetchone()[0]
        by_network = db.execute(
            "SELECT count(*) FROM signup_caps WHERE kind = 'network' AND hash = ? "
            "AND mailed AND created_at >= ?",
            (net_hash, _ts(when - NETWORK_WINDOW)),
        ).fetchone()[0]
        mail = (
            not (blocked and never_mail(*blocked[0]))
            and by_address < 1
            and by_network < per_network
        )
        db.executemany(
            "INSERT INTO signup_caps (kind, hash, mailed, created_at) VALUES (?, ?, ?, ?)",
            [
                ("address", addr_hash, int(mail), _ts(when)),
                ("network", net_hash, int(mail), _ts(when)),
            ],
        )
    return mail


@dataclass(frozen=True)
class Confirmed:
    """A confirmed subscriber: their contact, its public id (what their links carry), language."""

    contact_id: int
    public_id: str
    email: str
    name: str
    lang: str
    new: bool = True  # False when this sign-up was confirmed before (the same link again)


def confirm(j: Journal, signup: SignUp, wording: Consent, when: datetime) -> Confirmed | None:
    """Put a confirmed sign-up on the list with its consent; None when it must not be.

    Not when the address bounced or complained since, nor when it unsubscribed after the link
    was made (the old link does not undo a later "no"). An earlier unsubscribe is lifted: the
    confirmation is their new, explicit consent. Durable (fsync) when it returns.
    """
    key = key_of(signup.email)
    requested = _ts(datetime.fromtimestamp(signup.requested_at, UTC))
    t = _ts(when)
    with j._tx() as db:
        gone = db.execute(
            "SELECT reason, kind, created_at FROM suppressions WHERE key = ?", (key,)
        ).fetchall()
        if gone and (never_mail(gone[0][0], gone[0][1]) or gone[0][2] > requested):
            return None
        # The same link pressed again (a double click, a second visit) changes nothing new.
        again = db.execute(
            "SELECT 1 FROM subscribers s JOIN contacts c ON c.id = s.contact_id "
            "WHERE c.key = ? AND s.requested_at = ?",
            (key, requested),
        ).fetchall()
        db.execute("DELETE FROM suppressions WHERE key = ?", (key,))
        contact_id, public_id = db.execute(
            "INSERT INTO contacts (key, email, name, language_pref, language_set_at, created_at, "
            f"updated_at, public_id) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, {_NEW_PUBLIC_ID}) "
            "ON CONFLICT (key) DO UPDATE SET "
            "email = excluded.email, language_pref = excluded.language_pref, "
            "language_set_at = excluded.language_set_at, updated_at = excluded.updated_at, "
            "name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE name END "
            "RETURNING id, public_id",
            (key, signup.email, signup.name, signup.lang, t),
        ).fetchone()
        db.execute(
            "INSERT INTO consent_texts (version, lang, text, first_used_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (version) DO NOTHING",
            (wording.version, wording.lang, wording.text, t),
        )
        db.execute(
            "INSERT INTO subscribers (contact_id, language, source, consent_version, "
            "requested_at, confirmed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (contact_id) DO "
            "UPDATE SET language = excluded.language, source = excluded.source, "
            "consent_version = excluded.consent_version, requested_at = excluded.requested_at, "
            "confirmed_at = excluded.confirmed_at",
            (contact_id, signup.lang, signup.source, wording.version, requested, t),
        )
        name = db.execute("SELECT name FROM contacts WHERE id = ?", (contact_id,)).fetchone()[0]
    return Confirmed(int(contact_id), str(public_id), signup.email, name, signup.lang, not again)


@dataclass(frozen=True)
class Subscriber:
    """A confirmed web subscriber's consent record, as `subscriber()` reads it back."""

    email: str
    name: str
    language: str
    source: str
    consent_version: str
    consent_text: str
    requested_at: str
    confirmed_at: str


def subscriber(j: Journal, email: str) -> Subscriber | None:
    """The consent record of one address, or None (never confirmed)."""
    rows = j._read(
        "SELECT c.email, c.name, s.language, s.source, s.consent_version, t.text, "
        "s.requested_at, s.confirmed_at FROM subscribers s JOIN contacts c ON c.id = s.contact_id "
        "JOIN consent_texts t ON t.version = s.consent_version WHERE c.key = ?",
        (key_of(email),),
    )
    return Subscriber(*rows[0]) if rows else None


def web_recipients(j: Journal) -> list[Recipient]:
    """Every confirmed web subscriber not suppressed, as recipients of a send (oldest first)."""
    from newsletter.runlist import WEB_LANGUAGE, WEB_ORDER, WEB_SUBSCRIBERS

    rows = j._read(
        f"SELECT c.email, c.key, c.name, {WEB_LANGUAGE} {WEB_SUBSCRIBERS} ORDER BY {WEB_ORDER}"
    )
    return [Recipient(email, key, name, lang, {}, 0) for email, key, name, lang in rows]


# --- the emails: confirmation and welcome, rendered like the alerts --------------------------------


@dataclass(frozen=True)
class Notice:
    """A one-off message rendered from templates/email/<name>.{html,txt}: what message.prepare
    reads of an edition."""

    alert_id: str
    lang: str
    variant: str
    subject: str
    html: str
    text: str
    greeting_named: str
    greeting_anonymous: str


_NOTICE_TEMPLATES = ("notice.html", "{name}.html", "{name}.txt")
_prepared: dict[tuple[str, str, str], tuple[tuple, message.PreparedEdition]] = {}
_prepared_lock = threading.Lock()


def _stamp(cfg: Config, name: str, lang: str) -> tuple:
    """Changes when a template of the message or the catalog does (an editor saved it)."""
    files = resources.template_files(cfg, "email")
    paths = [files.get(t.format(name=name)) for t in _NOTICE_TEMPLATES]
    paths.append(i18n.catalog_source(cfg, lang))
    return tuple(i18n._stamp(p) for p in paths if p is not None)


def _notice(cfg: Config, name: str, lang: str, subject: str, **values: object) -> Notice:
    from newsletter import render

    env = i18n.jinja_env(cfg, lang)
    ctx = {
        "lang": lang,
        "org": cfg.org,
        "subject": subject,
        "postal_address": cfg.sender.postal_address,
        "tokens": tokens,
        **values,
    }
    gettext = i18n.translations(cfg, lang).gettext
    return Notice(
        alert_id=name,
        lang=lang,
        variant="member" if name == "welcome" else name,
        subject=subject,
        html=render.inline(render._render(env, f"{name}.html", ctx)),
        text=render._tidy_text(render._render(env, f"{name}.txt", ctx)),
        greeting_named=gettext(i18n.EMAIL_STRINGS["greeting_named"]),
        greeting_anonymous=gettext(i18n.EMAIL_STRINGS["greeting_anonymous"]),
    )


def _prepare(cfg: Config, name: str, lang: str) -> message.PreparedEdition:
    """The message rendered and inlined once per language, like an alert's edition; each
    recipient's values (the link, the greeting) are filled by `build`. Re-rendered when a
    template or catalog changes. Rendering per email would cost ~30 ms of CPU in the mail thread,
    which a request running beside it would feel: how slow the next answer is must not say
    whether the last sign-up got an email."""
    stamp = _stamp(cfg, name, lang)
    key = (str(cfg.root), name, lang)
    with _prepared_lock:
        hit = _prepared.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    t = i18n.translations(cfg, lang).gettext
    subject = t(i18n.EMAIL_STRINGS[f"{name}_subject"]) % {"org": cfg.org.name}
    notice = _notice(cfg, name, lang, subject, days=CONFIRM_DAYS)
    prepared = message.prepare(cfg, notice)
    with _prepared_lock:
        _prepared[key] = (stamp, prepared)
    return prepared


@dataclass(frozen=True)
class _To:
    email: str
    name: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def confirmation_message(cfg: Config, signup: SignUp, url: str) -> bytes:
    """The confirmation email in the sign-up's language: the org's From, its postal address, the
    link (a page with a button) and how long it works.

    To the bare address, without the name: anyone may type any address and name into the form,
    and the name would carry a stranger's words (spam, a phishing line) into that mailbox from
    the organisation's domain. The name is used once the mailbox's owner has confirmed."""
    prepared = _prepare(cfg, "confirm", signup.lang)
    return prepared.build(_To(signup.email), {tokens.CONFIRM_URL: url})[1]


def welcome_message(cfg: Config, who: Confirmed, links: dict[str, str]) -> bytes:
    """The welcome message after confirming: a member's message, with their unsubscribe link
    (and List-Unsubscribe) in `links`."""
    return _prepare(cfg, "welcome", who.lang).build(_To(who.email, who.name), links)[1]


class MailQueue:
    """Sends the sign-up emails from one background thread, off the request's path: the page a
    request gets, and when, never depend on whether (or how slowly) an email went out."""

    def __init__(self, cfg: Config, size: int = 1000) -> None:
        self.cfg = cfg
        self._queue: queue.Queue[tuple[str, Callable[[], bytes]] | None] = queue.Queue(size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0  # emails the server (or the outbox) took

    def put(self, rcpt: str, build: Callable[[], bytes]) -> None:
        """Queue one email (built in the thread); dropped, and logged, when the queue is full."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="signup-mail", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((rcpt, build))
        except queue.Full:
            log.error("sign-up mail queue full: one email dropped")

    def idle(self) -> None:
        """Nothing to send (the counterpart of `put`, so both answers do the same steps)."""
        with self._lock:
            pass

    def join(self) -> None:
        """Wait until every queued email was handled (tests; a clean shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        from newsletter import deliver

        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                rcpt, build = item
                try:
                    deliver.send_one(self.cfg, "subscribe", rcpt, build())
                    self.sent += 1
                except NewsletterError as err:
                    # Without the address (the server's reply often quotes it too): anyone's
                    # can be typed into the form, and the log must not become a list of them.
                    who = re.compile(re.escape(rcpt), re.IGNORECASE)
                    log.error("sign-up mail not sent: %s", who.sub("<address>", err.message))
                except Exception:  # a bug must not stop the next sign-ups' mail
                    log.exception("sign-up mail not sent")
            finally:
                self._queue.task_done()

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


def clean_name(name: str) -> str:
    """A sign-up's name: one line, at most NAME_MAX characters."""
    return clean_text(name)[:NAME_MAX]
