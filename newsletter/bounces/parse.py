"""One message from the bounce mailbox -> a Report: what it is, who failed, and the clues to us.

What is read by hand and what by a library, and why:
- RFC 3464 delivery status notifications and RFC 5965 (ARF) complaint reports are parsed here,
  with the standard library's email parser: their fields are a few `Name: type; value` lines,
  and what this tool needs from them (Status, Diagnostic-Code, Action, Feedback-Type, the
  returned headers whether in a message/rfc822 or a text/rfc822-headers part) is exactly what
  flufl.bounce throws away: it answers only *which addresses* failed, temporarily or for good.
- The non-standard formats (qmail, Exim, older Sendmail, Exchange, Yahoo, GroupWise, SMTP32, ...)
  go through flufl.bounce's detectors (Mailman's, 20 years of real samples behind them); the
  diagnostic line beside each address they find is then picked out of the text here.
- RFC 3834 auto-replies and vacation messages are recognised here (headers, then the subject
  lines of common clients in Spanish and English) and ignored.
- The clues that tie a report to one of our messages are gathered from every part, attachments
  included (message/rfc822, text/rfc822-headers, an attached .eml, base64 or not): the
  Message-IDs it quotes and the `+token` addresses (VERP) it was sent to or returns.
"""

from __future__ import annotations

import email
import email.parser
import email.policy
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message

from flufl.bounce import all_failures

# Kinds of message.
DSN = "dsn"  # RFC 3464 with at least one failed recipient
BOUNCE = "bounce"  # a non-standard failure notice
DELAY = "delay"  # a DSN that only says delivery is delayed: a warning, not a failure
COMPLAINT = "complaint"  # RFC 5965 (ARF)
AUTOREPLY = "autoreply"  # RFC 3834 auto-reply, vacation, out of office
OTHER = "other"  # anything else: a person's mail. Left alone.

DIAGNOSTIC_MAX = 300  # characters of a diagnostic worth keeping

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"(?<![\d.])([45]\d\d)(?=[ -]|$)")
_MSGID = re.compile(rb"(?im)^(?:message-id|x-message-id)[ \t]*:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]+>)")
_ADDR = re.compile(r"[^\s<>()\[\]\"',;:]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_VERP_HEADERS = (
    "To",
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Original-Recipient",
    "Return-Path",  # only in returned original headers (a bounce's own is <>)
)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery|mail\.delivery|mdaemon", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status notification|failure|has failed|failed)|"
    r"failure notice|returned mail|mail delivery failed|could not be delivered|"
    r"delivery problem|nondeliverable|non remis|no se pudo entregar|unzustellbar|"
    r"mail error|error",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto:|autoreply|auto-reply|auto reply|automatic reply|out of (the )?office|"
    r"respuesta autom[aá]tica|fuera de la oficina|ausente|vacation|on vacation|"
    r"r[ée]ponse automatique|absence|abwesen|automatische antwort|away from)",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient the report says could not be reached."""

    address: str  # as the report gives it ("" when none could be read)
    status: str  # enhanced status code ("5.1.1"), else an SMTP code ("550"), else ""
    diagnostic: str  # the receiving server's words, cleaned and cut
    temporary: bool  # what the report itself says (4.x.x, or flufl's "temporary")
    remote: str = ""  # the receiving side: Remote-MTA, else the address's domain


@dataclass
class Report:
    """What one message is and what it tells about our mail."""

    kind: str
    identity: str  # stable across copies of the same message (Message-ID, else body hash)
    subject: str = ""
    failures: list[Failure] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)  # Message-IDs it quotes, ours among them
    verp: list[tuple[str, str, str]] = field(default_factory=list)  # (local, token, domain)
    feedback_type: str = ""  # ARF: abuse, fraud, ...

    @property
    def processed(self) -> bool:
        """True when it belongs in the done folder; False for a person's mail (left alone)."""
        return self.kind != OTHER


def parse(data: bytes) -> Report:
    """Read one message. Never raises on malformed mail: the worst case is OTHER."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    report = Report(kind=OTHER, identity=_identity(msg, data), subject=_header(msg, "Subject"))
    parts = list(_walk(msg))
    report.message_ids = _message_ids(msg, parts, data)
    report.verp = _verp(msg, parts)

    feedback = [p for p, _ in parts if p.get_content_type() == "message/feedback-report"]
    if feedback:
        return _arf(report, feedback[0], parts)
    statuses = [p for p, _ in parts if p.get_content_type() in _STATUS_TYPES]
    if statuses:
        _dsn(report, statuses, _body_text(msg, parts))
        if report.kind != OTHER:
            return report
    if _auto_reply(msg):
        report.kind = AUTOREPLY
        return report
    _nonstandard(report, msg, parts)
    return report


_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")


# --- the pieces --------------------------------------------------------------------------------


def _identity(msg: Message, data: bytes) -> str:
    """The same message read from a Maildir, an mbox or IMAP gets the same identity: its own
    Message-ID, else a hash of its body (delivery prepends headers, never touches the body)."""
    mid = (msg.get("Message-ID") or "").strip()
    if mid:
        return "id:" + mid[:200]
    cut = data.find(b"\n\n")
    body = data[cut:] if cut >= 0 else data
    return "body:" + hashlib.sha256(body.replace(b"\r\n", b"\n")).hexdigest()[:40]


def _header(msg: Message, name: str) -> str:
    raw = msg.get(name)
    if raw is None:
        return ""
    try:
        text = str(email.header.make_header(email.header.decode_header(str(raw))))
    except (ValueError, LookupError, email.errors.HeaderParseError):
        text = str(raw)
    return " ".join(text.split())


def _walk(msg: Message, depth: int = 0) -> Iterator[tuple[Message, int]]:
    """Every part with its depth in returned messages (0: the report itself; 1+: inside an
    attached message). Attached .eml files sent as application/octet-stream are opened too."""
    yield msg, depth
    payload = msg.get_payload()
    if isinstance(payload, list):
        ctype = msg.get_content_type()
        inner = depth + (1 if ctype in ("message/rfc822", "message/global") else 0)
        for sub in payload:
            if isinstance(sub, Message):
                yield from _walk(sub, inner)
        return
    ctype = msg.get_content_type()
    if ctype in ("message/rfc822", "message/global") or (
        ctype == "application/octet-stream"
        and (msg.get_filename() or "").lower().endswith((".eml", ".msg"))
    ):
        body = msg.get_payload(decode=True)  # an attached message sent base64
        if isinstance(body, bytes) and body:
            yield from _walk(
                email.message_from_bytes(body, policy=email.policy.compat32), depth + 1
            )


def _text(part: Message) -> str:
    """A text part's decoded words ("" when it has none)."""
    body = part.get_payload(decode=True)
    if not isinstance(body, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _headers_of(part: Message) -> Message | None:
    """The returned original headers a part holds (message/rfc822 or text/rfc822-headers)."""
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    if ctype in ("text/rfc822-headers", "message/global-headers"):
        return email.parser.HeaderParser(policy=email.policy.compat32).parsestr(
            _text(part).lstrip()
        )
    return None


def _message_ids(msg: Message, parts: list[tuple[Message, int]], data: bytes) -> list[str]:
    """Message-IDs the report quotes: returned headers, In-Reply-To/References, and any
    `Message-ID:` line in its text or attachments (however they were encoded)."""
    own = (msg.get("Message-ID") or "").strip()
    found: list[str] = []
    for name in ("In-Reply-To", "References", "X-Original-Message-ID"):
        found += re.findall(r"<[^<>\s]+>", str(msg.get(name) or ""))
    for part, depth in parts:
        if depth and part.get("Message-ID"):
            found.append(str(part["Message-ID"]).strip())
        headers = _headers_of(part)
        if headers is not None and headers.get("Message-ID"):
            found.append(str(headers["Message-ID"]).strip())
        if part.get_content_maintype() == "text":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                found += [m.decode("ascii", "replace") for m in _MSGID.findall(body)]
    found += [m.decode("ascii", "replace") for m in _MSGID.findall(data.split(b"\n\n", 1)[-1])]
    seen: dict[str, None] = {}
    for mid in found:
        mid = mid.strip()
        if mid and mid != own and mid.startswith("<"):
            seen.setdefault(mid, None)
    return list(seen)


def _verp(msg: Message, parts: list[tuple[Message, int]]) -> list[tuple[str, str, str]]:
    """(local, token, domain) of every `local+token@domain` the bounce was sent to, or that the
    returned headers name as the original's Return-Path."""
    sources: list[Message] = [msg]
    for part, depth in parts:
        if depth:
            sources.append(part)
        headers = _headers_of(part)
        if headers is not None:
            sources.append(headers)
    out: dict[tuple[str, str, str], None] = {}
    for m in sources:
        for name in _VERP_HEADERS:
            for value in m.get_all(name) or []:
                for addr in _ADDR.findall(str(value)):
                    local, _, domain = addr.rpartition("@")
                    if "+" in local:
                        base, _, token = local.partition("+")
                        out.setdefault((base.lower(), token.lower(), domain.lower()), None)
    return list(out)


def _fields(part: Message) -> list[Message]:
    """The field blocks of a delivery-status or feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    text = payload if isinstance(payload, str) else ""
    blocks = re.split(r"\r?\n[ \t]*\r?\n", text.strip())
    parser = email.parser.HeaderParser(policy=email.policy.compat32)
    return [parser.parsestr(b.strip() + "\n") for b in blocks if b.strip()]


def _value(block: Message, name: str) -> str:
    """`rfc822; ana@example.org` -> `ana@example.org`; folded lines joined."""
    raw = block.get(name)
    if raw is None:
        return ""
    value = " ".join(str(raw).split())
    head, sep, rest = value.partition(";")
    return rest.strip() if sep and re.fullmatch(r"[A-Za-z0-9-]+", head.strip()) else value


def _clean(text: str) -> str:
    text = " ".join(text.split())
    return text[:DIAGNOSTIC_MAX]


def _status_of(text: str) -> str:
    m = _ENHANCED.search(text)
    if m:
        return m.group(0)
    m = _SMTP_CODE.search(text)
    return m.group(1) if m else ""


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().strip(">")


def _body_text(msg: Message, parts: list[tuple[Message, int]]) -> str:
    """The report's own words (not the returned message's)."""
    text = "\n".join(
        _text(p)
        for p, depth in parts
        if not depth and p.get_content_type() in ("text/plain", "text/html")
    )
    return text or (_text(msg) if not msg.is_multipart() else "")


def _dsn(report: Report, statuses: list[Message], text: str) -> None:
    delayed = False
    for part in statuses:
        for block in _fields(part):
            address = _value(block, "Original-Recipient") or _value(block, "Final-Recipient")
            if not address and not block.get("Action") and not block.get("Status"):
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            address = address.strip("<>")
            action = (_value(block, "Action").lower().split() or [""])[0]
            status_field = _value(block, "Status")
            status = _status_of(status_field)
            diagnostic = _clean(
                _value(block, "Diagnostic-Code")
                or _value(block, "X-Postfix-Diagnostic")
                or (status_field if len(status_field) > len(status) + 3 else "")
            )
            if action == "delayed":
                delayed = True
                continue
            if action not in ("failed", "failure", "error", "") or (
                not action and not status.startswith("5")
            ):
                continue  # delivered, relayed, expanded
            if not diagnostic:  # some servers say why only in the text for humans
                diagnostic = _diagnostic_near(text, address)
            if not status or status in ("5.0.0", "4.0.0"):
                status = _status_of(diagnostic) or status  # the server's words say more
            remote = _value(block, "Remote-MTA")
            if any(f.address == address and f.status == status for f in report.failures):
                continue  # the same recipient reported again (one block per attempt)
            report.failures.append(
                Failure(
                    address=address,
                    status=status,
                    diagnostic=diagnostic,
                    temporary=status.startswith("4"),
                    remote=_domain(address) or remote,
                )
            )
    if report.failures:
        report.kind = DSN
    elif delayed:
        report.kind = DELAY


def _arf(report: Report, part: Message, parts: list[tuple[Message, int]]) -> Report:
    report.kind = COMPLAINT
    blocks = _fields(part)
    info = blocks[0] if blocks else Message()
    report.feedback_type = _value(info, "Feedback-Type").lower() or "abuse"
    address = _value(info, "Original-Rcpt-To") or _value(info, "Removal-Recipient")
    if not address:
        for p, _ in parts:
            headers = _headers_of(p)
            if headers is not None and headers.get("To"):
                found = _ADDR.findall(str(headers["To"]))
                address = found[0] if found else ""
                break
    address = address.strip("<>")
    report.failures.append(
        Failure(
            address=address,
            status="",
            diagnostic=_clean(
                f"complaint ({report.feedback_type}) from "
                f"{_value(info, 'Reported-Domain') or _value(info, 'Source-IP') or _value(info, 'User-Agent')}"
            ),
            temporary=False,
            remote=_domain(address),
        )
    )
    return report


def _auto_reply(msg: Message) -> bool:
    """RFC 3834 and the headers and subjects auto-responders really use."""
    sender = f"{msg.get('From', '')} {msg.get('Return-Path', '')}"
    if _DAEMON.search(sender) and not msg.get("X-Autoreply"):
        return False
    auto = str(msg.get("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponder"):
        return True
    precedence = str(msg.get("Precedence") or "").strip().lower()
    if precedence == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(_header(msg, "Subject")))


def _nonstandard(report: Report, msg: Message, parts: list[tuple[Message, int]]) -> None:
    """qmail, Exim, old Sendmail, Exchange, providers' own wordings: flufl.bounce's detectors
    say who; the text beside the address says why."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector tripping on odd mail must not stop a whole mailbox
        temporary, permanent = frozenset(), frozenset()
    text = _body_text(msg, parts)
    found = [(a, False) for a in sorted(permanent)] + [
        (a, True) for a in sorted(temporary - permanent)
    ]
    if temporary and not permanent:
        # flufl.bounce's only source of "temporary" here is its warning detector: "message
        # delayed, still trying". A warning, not a failure.
        report.kind = DELAY
        return
    looks = _looks_like_bounce(msg)
    if not found and not looks:
        return
    report.kind = BOUNCE
    for raw, temp in found:
        address = raw.decode("ascii", "replace")
        diagnostic = _diagnostic_near(text, address)
        status = _status_of(diagnostic)
        report.failures.append(
            Failure(
                address=address,
                status=status,
                diagnostic=diagnostic,
                temporary=temp or status.startswith("4"),
                remote=_domain(address),
            )
        )
    if not report.failures:  # a failure notice that names nobody we can read: VERP may still
        diagnostic = _diagnostic_near(text, "")
        status = _status_of(diagnostic)
        report.failures.append(Failure("", status, diagnostic, status.startswith("4")))


def _looks_like_bounce(msg: Message) -> bool:
    """A failure notice flufl.bounce found nobody in: from a mailer daemon (or the null sender
    every notification comes from) with a failure subject, or with one of the exact subjects
    the common MTAs write (a person's "Fwd:" or "Re:" of one is no bounce)."""
    subject = _header(msg, "Subject")
    if _MTA_SUBJECT.match(subject):
        return True
    sender = f"{msg.get('From', '')} {msg.get('Return-Path', '')}"
    null = str(msg.get("Return-Path", "")).strip() == "<>" or "<>" in str(msg.get("From", ""))
    return bool((_DAEMON.search(sender) or null) and _BOUNCE_SUBJECT.search(subject))


_MTA_SUBJECT = re.compile(
    r"(mail delivery failed: returning message to sender|undelivered mail returned to sender|"
    r"delivery status notification \(failure\)|undeliverable:|failure notice$|"
    r"returned mail: |mail could not be delivered|mail system error - returned mail)",
    re.I,
)


_CODE_LINE = re.compile(
    r"(?<![\d.])[45]\d\d(?:[ -]|$)|\b[45]\.\d{1,3}\.\d{1,3}\b|"
    r"user unknown|does not exist|no such|mailbox|quota|unknown|not found|not recognized|"
    r"rejected|refused|denied|blocked|spam|disabled|discontinued|not accepting|"
    r"cannot be delivered|could not be delivered|unable to deliver|expired",
    re.I,
)
_STATUS_LINE = re.compile(r"(?<![\d.])[45]\d\d(?:[ -]|$)|\b[45]\.\d{1,3}\.\d{1,3}\b")
_END_BLOCK = re.compile(r"^\s*(-{2,}|original message|below this line|message removed)", re.I)


def _diagnostic_near(text: str, address: str) -> str:
    """The server's words about `address`: the lines from where the address is named up to a
    blank line, if they hold a code or a reason; else the first such line in the text."""
    lines = text.splitlines()
    if address:
        low = address.lower()
        for i, line in enumerate(lines):
            if low in line.lower():
                block: list[str] = []
                for nxt in lines[i : i + 8]:
                    if (not nxt.strip() and len(block) > 1) or _END_BLOCK.match(nxt):
                        break
                    if nxt.strip():
                        block.append(nxt.strip())
                # From the first line with a reply code on, if one has it: the server's words.
                coded = [n for n, ln in enumerate(block) if _STATUS_LINE.search(ln)]
                joined = " ".join(block[coded[0] :] if coded else block)
                if _CODE_LINE.search(re.sub(re.escape(address), "", joined, flags=re.I)):
                    return _clean(joined)
    for line in lines:
        if _CODE_LINE.search(line):
            return _clean(line)
    return ""
