"""Forward to a friend: the /f/<token> form, and `newsletter forward` from the terminal.

Both send the same forward-safe copy through the same delivery path; the checks (addresses, name,
note, language) are shared, and the page localises the error codes the command prints in English.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import Blueprint, Response, current_app, request

from newsletter import i18n, links, message, tokens
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.forwards import Forwards
from newsletter.suppressions import Suppressions
from newsletter.web.common import check_csrf, client_ip, make_csrf, pages, subject

# Abuse limits on forwarding, counted in friends (messages), over the last 24 hours.
MAX_FRIENDS = 5  # per submission
NOTE_MAX = 500  # characters
NAME_MAX = 100
FORWARDS_PER_TOKEN_PER_DAY = 20  # one member (forward token) across submissions
FORWARDS_PER_IP_PER_DAY = 50  # one client address, whatever the tokens

bp = Blueprint("forward", __name__)


class _Pace:
    """How long a forward's delivery takes, lately: opening the connection, and sending each
    friend's copy. Moving averages, seeded with a guess.

    A friend who unsubscribed gets nothing, which is quicker than a delivery: the page waits
    out what their copy would have cost (and the connection, when nobody got one), so the time
    of the answer does not tell the forwarder who is on the list.
    """

    def __init__(self, connect: float = 0.02, per_friend: float = 0.01) -> None:
        self.connect = connect
        self.per_friend = per_friend
        self._lock = threading.Lock()

    def took(self, connect: float, per_friend: float) -> None:
        """A real delivery: `connect` seconds to open, `per_friend` for each friend's copy."""
        with self._lock:
            self.connect += (connect - self.connect) / 4
            self.per_friend += (per_friend - self.per_friend) / 4

    def wait(self, skipped: int, *, connected: bool) -> None:
        """Sleep for what `skipped` friends' copies (and the connection, unless one was opened
        for the others) would have taken."""
        with self._lock:
            pause = skipped * self.per_friend + (0.0 if connected else self.connect)
        time.sleep(min(pause, 10.0))


@dataclass
class SendTimes:
    """What deliver_all measured: seconds to open the transport, and for each message."""

    open: float = 0.0
    sends: list[float] = field(default_factory=list)


PACE = _Pace()


# --- forwarding: validation and the forward-safe copy, shared by the page and the command ----------


@dataclass(frozen=True)
class ForwardRequest:
    """A checked forward: friends' normalised addresses, the sender's name, the note, a language."""

    friends: tuple[str, ...]
    name: str
    note: str
    lang: str


def clean_note(note: str) -> str:
    """The note with line endings normalised to LF and other control characters dropped.

    Browsers count a line break as one character for `maxlength` but submit CRLF, so the limit is
    checked after normalising, or a note the form accepted would be refused.
    """
    note = note.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in note if c == "\n" or unicodedata.category(c)[0] != "C").strip()


def check_forward(
    to: Sequence[str], name: str, note: str, lang: str, languages: Sequence[str]
) -> tuple[ForwardRequest | None, list[tuple[str, Any]]]:
    """Validate a forward; return the request, or None and every problem as (code, argument)."""
    errors: list[tuple[str, Any]] = []
    given = [a.strip() for a in to if a and a.strip()]
    friends: list[str] = []
    if not given:
        errors.append(("no_friend", None))
    if len(given) > MAX_FRIENDS:
        errors.append(("too_many", MAX_FRIENDS))
    for address in given[: MAX_FRIENDS + 1]:
        try:
            # ASCII only: the address goes into an SMTP envelope and a To header as it is.
            v = validate_email(address, check_deliverability=False, allow_smtputf8=False)
            ok = message.check_address(v.ascii_email or v.normalized)
        except (EmailNotValidError, NewsletterError):
            errors.append(("bad_address", address[:254]))
            continue
        if ok.lower() not in (f.lower() for f in friends):
            friends.append(ok)
    name = message.clean_name(name)
    if not name:
        errors.append(("no_name", None))
    elif len(name) > NAME_MAX:
        errors.append(("name_too_long", NAME_MAX))
    note = clean_note(note)
    if len(note) > NOTE_MAX:
        errors.append(("note_too_long", NOTE_MAX))
    if lang not in languages:
        errors.append(("bad_language", lang))
    if errors:
        return None, errors
    return ForwardRequest(tuple(friends), name, note, lang), []


FORWARDED_ONE = "Forwarded %(alert)s (%(lang)s) to %(reached)s of %(num)s friend via %(where)s."
FORWARDED_MANY = "Forwarded %(alert)s (%(lang)s) to %(reached)s of %(num)s friends via %(where)s."


def forward_intro(cfg: Config, lang: str, name: str) -> str:
    """ "NAME forwarded you this alert", in the edition's language (plain text, not escaped)."""
    t = i18n.translations(cfg, lang, "web")
    return t.gettext("%(name)s forwarded you this alert") % {"name": name}


@dataclass(frozen=True)
class Friend:
    """A forward's recipient: an address only (no name, no merge fields, never stored)."""

    email: str
    name: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def forward_messages(
    cfg: Config, alert: Any, fwd: ForwardRequest, reply_to: str | None, edition: Any = None
) -> list[tuple[str, bytes]]:
    """(friend, message bytes) for each friend: the forward variant, intro and note filled.

    `reply_to` (the member's address, when known) replaces `[sender] reply_to` so a friend's
    answer reaches the member; the From stays the organisation's (DMARC alignment).
    """
    from newsletter import render

    if edition is None:
        edition = render.render_edition(cfg, alert, fwd.lang, variant="forward")
    if reply_to:
        cfg = replace(cfg, sender=replace(cfg.sender, reply_to=reply_to))
    prepared = message.prepare(cfg, edition)
    values = {
        tokens.FORWARD_INTRO: forward_intro(cfg, fwd.lang, fwd.name),
        tokens.FORWARD_NOTE: fwd.note,
        tokens.VIEW_URL: links.archive_url(cfg, alert.id, fwd.lang),
    }
    return [(friend, prepared.build(Friend(friend), values)[1]) for friend in fwd.friends]


def unsubscribed_friends(journal: Any, friends: Sequence[str]) -> set[str]:
    """Friends who unsubscribed from the list: a forward is the organisation's mail, so they get none.

    (CAN-SPAM treats a forward the organisation sends as its own message: opt-outs apply.)
    """
    return {f for f in friends if Suppressions(journal).has(f)}


def deliver_all(
    cfg: Config, alert_id: str, messages: list[tuple[str, bytes]], times: SendTimes | None = None
) -> tuple[list[str], str]:
    """Send prepared messages over one connection of the configured transport.

    Returns who got them and where they went ("SMTP host:port" or "the outbox …").

    The same transports as `send` (SMTP, else the outbox, in a `forwards` folder so forwards do
    not mix with members' copies). A copy the server may have taken before the line dropped counts
    as reached: counting it against the caps is the safe side. `times`, when given, gets the
    seconds each step took.
    """
    from newsletter import deliver

    mail_from = message.sender_address(cfg)[1]
    transport = deliver.make_transport(cfg, f"{alert_id}/forwards")
    reached: list[str] = []
    times = times if times is not None else SendTimes()
    try:
        t0 = time.monotonic()
        transport.open()
        times.open = time.monotonic() - t0
        for rcpt, data in messages:
            t0 = time.monotonic()
            try:
                code, _text = transport.send(mail_from, rcpt, data)
            except deliver.Uncertain:
                reached.append(rcpt)
                continue
            finally:
                times.sends.append(time.monotonic() - t0)
            if code < 300:
                reached.append(rcpt)
    except deliver.Retry as err:
        if not reached:
            raise NewsletterError(f"{err}; nothing was forwarded. Try again later.") from None
    finally:
        transport.close()
    return reached, transport.description


def run_forward(
    cfg: Config,
    alert_path: Path,
    to: Sequence[str],
    from_name: str,
    note: str,
    lang: str | None,
) -> None:
    """`newsletter forward`: the forward-safe copy to friends, through the same delivery path."""
    import click

    from newsletter import content

    alert = content.load_alert(cfg, alert_path)
    lang = lang or alert.languages[0]
    fwd, errors = check_forward(to, from_name, note, lang, alert.languages)
    if fwd is None:
        raise NewsletterError(
            "; ".join(_error_line(code, arg, where="command") for code, arg in errors) + "."
        )
    skipped: set[str] = set()
    if cfg.path("state").exists():  # a first run creates no state file just to read it
        from newsletter.journal import Journal

        with Journal(cfg.path("state"), secret=cfg.secret) as j:
            skipped = unsubscribed_friends(j, fwd.friends)
    if skipped:
        click.echo(f"Skipped (unsubscribed from the list): {', '.join(sorted(skipped))}")
        fwd = replace(fwd, friends=tuple(f for f in fwd.friends if f not in skipped))
    if not fwd.friends:
        click.echo("Nothing forwarded: every address given has unsubscribed from the list.")
        return
    reached, where = deliver_all(cfg, alert.id, forward_messages(cfg, alert, fwd, reply_to=None))
    # The terminal speaks English; its plural forms come from the catalog like the pages'.
    click.echo(
        i18n.translations(cfg, "en", "web").ngettext(
            FORWARDED_ONE, FORWARDED_MANY, len(fwd.friends)
        )
        % {
            "alert": alert.id,
            "lang": lang,
            "reached": len(reached),
            "num": len(fwd.friends),
            "where": where,
        }
    )
    if len(reached) < len(fwd.friends):
        missed = ", ".join(f for f in fwd.friends if f not in reached)
        raise NewsletterError(f"not delivered to {missed}; the transport refused them. Try again.")


def _error_line(code: str, arg: Any, *, where: str) -> str:
    """English one-liners for the command (the web page localises the same codes)."""
    return {
        "no_friend": "give at least one --to ADDRESS",
        "too_many": f"at most {MAX_FRIENDS} friends at a time (--to given more often)",
        "bad_address": f"--to {arg!r} is not a valid email address",
        "no_name": "--from-name is empty",
        "name_too_long": f"--from-name is longer than {NAME_MAX} characters",
        "note_too_long": f"--note is longer than {NOTE_MAX} characters; shorten it",
        "bad_language": f"--lang {arg}: the alert has no such edition",
    }.get(code, code)


# --- the page ------------------------------------------------------------------------------------


def _form(
    token: str,
    data: links.TokenData,
    alert: Any,
    *,
    errors: Sequence[tuple[str, Any]] = (),
    friends: Sequence[str] = (),
    name: str = "",
    note: str = "",
    chosen: str | None = None,
    status: int = 200,
) -> Response:
    p = pages()
    html = p.render(
        data.lang,
        "forward.html",
        action=f"{p.root}/f/{token}",
        csrf=make_csrf(p.secret, "forward", token, p.clock()),
        subject=subject(alert, data.lang),
        archive_url=f"{p.root}/a/{alert.id}/{data.lang}",
        errors=list(errors),
        friends=list(friends)[:MAX_FRIENDS],
        name=name,
        note=note,
        chosen=chosen or (data.lang if data.lang in alert.languages else alert.languages[0]),
        languages=[(code, links.LANG_NAMES[code]) for code in alert.languages],
        max_friends=MAX_FRIENDS,
        note_max=NOTE_MAX,
        name_max=NAME_MAX,
    )
    return p.page(html, status)


def _context(token: str) -> tuple[links.TokenData, Any, Any] | Response:
    """The link's data, alert and member; else the page that says why not (nothing is sent)."""
    p = pages()
    data = p.token("forward", token)  # BadToken: the 400 page
    alert = p.alert(data.alert_id)
    if alert is None:
        return p.notice("not_found", 404, data.lang)
    contact = p.contact(data)
    if contact is None:  # a link from another state file: not this member's to use
        return p.notice("no_contact", 404, data.lang)
    return data, alert, contact


@bp.get("/f/<token>")
def forward_get(token: str) -> Response:
    """The form, the member's name filled in."""
    ctx = _context(token)
    if isinstance(ctx, Response):
        return ctx
    data, alert, contact = ctx
    return _form(token, data, alert, name=contact.name)


@bp.post("/f/<token>")
def forward_post(token: str) -> Response:
    """Check the form and the daily caps, send the forward-safe copy, record it."""
    ctx = _context(token)
    if isinstance(ctx, Response):
        return ctx
    p = pages()
    cfg = p.cfg
    data, alert, contact = ctx
    form = request.form
    given = {
        "friends": form.getlist("to"),
        "name": form.get("name", ""),
        "note": form.get("note", ""),
        "chosen": form.get("lang", data.lang),
    }
    if not check_csrf(p.secret, "forward", token, form.get("csrf", ""), p.clock()):
        return _form(token, data, alert, errors=[("form_expired", None)], status=400, **given)
    fwd, errors = check_forward(
        given["friends"], given["name"], given["note"], given["chosen"], alert.languages
    )
    if fwd is None:
        return _form(token, data, alert, errors=errors, status=400, **given)
    ip = client_ip()
    app_cfg = current_app.config
    caps = app_cfg["FORWARDS_PER_TOKEN_PER_DAY"], app_cfg["FORWARDS_PER_IP_PER_DAY"]
    # Check and count in one transaction, before anything is sent (parallel submissions each
    # see the others' counts). A friend who unsubscribed counts too, and gets nothing.
    with p.journal() as j:
        reservation, refusal, skipped = Forwards(j).reserve(
            contact.id, ip, alert.id, fwd.friends, caps, datetime.fromtimestamp(p.clock(), UTC)
        )
    if reservation is None:
        arg = caps[0] if refusal == "limit_token" else None
        return _form(token, data, alert, errors=[(refusal, arg)], status=429, **given)
    wanted = replace(fwd, friends=tuple(f for f in fwd.friends if f not in skipped))
    # Every friend's copy is built, theirs too, so that the work done is the same; only the
    # sending differs, and PACE waits that out.
    messages = forward_messages(
        cfg, alert, fwd, contact.email, p.edition(alert.id, fwd.lang, "forward")
    )
    messages = [(friend, data) for friend, data in messages if friend not in skipped]
    reached: list[str] = []
    if messages:
        times = SendTimes()
        try:
            reached, _where = deliver_all(cfg, alert.id, messages, times)
        except NewsletterError as err:
            current_app.logger.error("forward: %s", err.message)
        if len(times.sends) == len(messages):  # a whole delivery: a fair measure
            PACE.took(times.open, sum(times.sends) / len(messages))
    if len(reached) < len(wanted.friends):  # refused or not sent: those do not count
        with p.journal() as j:
            Forwards(j).settle(reservation, len(reached) + len(skipped))
    # Whoever unsubscribed must not show, not even in how long the answer takes.
    PACE.wait(len(skipped), connected=bool(wanted.friends))
    if not reached and wanted.friends:
        return _form(token, data, alert, errors=[("send_failed", None)], status=503, **given)
    html = p.render(
        data.lang,
        "forward_done.html",
        # Friends who unsubscribed are reported as sent: the page is the same whoever they are.
        sent=len(reached) + len(skipped),
        missed=[f for f in wanted.friends if f not in reached],
        subject=subject(alert, data.lang),
        archive_url=f"{p.root}/a/{alert.id}/{data.lang}",
    )
    return p.page(html)
