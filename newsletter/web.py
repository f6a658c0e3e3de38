"""The public pages (`newsletter serve`): archive, forward to a friend, language switch, unsubscribe.

Every page that changes state does so only on POST: mail scanners follow every link in a message
with GET. The signed token in the URL is the authority (it names a contact id, never an address);
forms that send mail also carry a CSRF field signed for that token and a time, so no cookie is
needed. `newsletter forward` sends the same forward-safe copy from the terminal.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from flask import Flask, Response, request
from itsdangerous import BadSignature, Signer
from markupsafe import Markup

from newsletter import i18n, links, message, tokens
from newsletter.config import Config
from newsletter.content import WRITE_MARK_RE
from newsletter.errors import NewsletterError

# Abuse limits on forwarding, counted in friends (messages), over the last 24 hours.
MAX_FRIENDS = 5  # per submission
NOTE_MAX = 500  # characters
NAME_MAX = 100
FORWARDS_PER_TOKEN_PER_DAY = 20  # one member (forward token) across submissions
FORWARDS_PER_IP_PER_DAY = 50  # one client address, whatever the tokens
CSRF_MAX_AGE = 6 * 3600  # a form left open this long must be reloaded
DAY = 86400

ALERT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
TOKEN_PATH_RE = re.compile(r"^(/[flu]/)[^/?#]+")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def other_language(lang: str) -> str:
    """The language a member switches to from `lang` (two languages: es and en)."""
    return "en" if lang == "es" else "es"


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
    return {f for f in friends if journal.is_suppressed(f)}


def deliver_all(
    cfg: Config, alert_id: str, messages: list[tuple[str, bytes]]
) -> tuple[list[str], str]:
    """Send prepared messages over one connection of the configured transport.

    Returns who got them and where they went ("SMTP host:port" or "the outbox …").

    The same transports as `send` (SMTP, else the outbox, in a `forwards` folder so forwards do
    not mix with members' copies). A copy the server may have taken before the line dropped counts
    as reached: counting it against the caps is the safe side.
    """
    from newsletter import deliver

    mail_from = message.sender_address(cfg)[1]
    transport = deliver.make_transport(cfg, f"{alert_id}/forwards")
    reached: list[str] = []
    try:
        transport.open()
        for rcpt, data in messages:
            try:
                code, _text = transport.send(mail_from, rcpt, data)
            except deliver.Uncertain:
                reached.append(rcpt)
                continue
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
    click.echo(
        f"Forwarded {alert.id} ({lang}) to {len(reached)} of {len(fwd.friends)} friends "
        f"via {where}."
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


# --- CSRF: a signed value bound to one page's token and a time -----------------------------------


def _csrf_signer(secret: str) -> Signer:
    return Signer(secret, salt="newsletter/csrf")


def _bind(purpose: str, token: str) -> str:
    return hashlib.sha256(f"{purpose}:{token}".encode()).hexdigest()[:32]


def make_csrf(secret: str, purpose: str, token: str, now: float | None = None) -> str:
    """A form field that proves the form was served by us, for this token, at `now`."""
    issued = int(time.time() if now is None else now)
    return _csrf_signer(secret).sign(f"{_bind(purpose, token)}.{issued}").decode()


def check_csrf(secret: str, purpose: str, token: str, value: str, now: float) -> bool:
    """True when `value` was made by make_csrf for this token within CSRF_MAX_AGE of `now`."""
    try:
        bound, issued = _csrf_signer(secret).unsign(value).decode().split(".")
        age = now - int(issued)
    except (BadSignature, UnicodeError, ValueError):
        return False
    return hmac.compare_digest(bound, _bind(purpose, token)) and -300 <= age <= CSRF_MAX_AGE


# --- the app -------------------------------------------------------------------------------------


class _Pages:
    """What the views share: config, secret, clock, template environments, the edition cache."""

    def __init__(self, cfg: Config, secret: str, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.secret = secret
        self.clock = clock
        self._lock = threading.Lock()
        self._editions: dict[tuple[str, str, str], tuple[int, Any]] = {}

    # templates
    def render(self, lang: str, template: str, /, **values: Any) -> str:
        env = i18n.jinja_env(self.cfg, lang, domain="web", subdir="web")
        return env.get_template(template).render(
            org_name=self.cfg.org.name,
            postal_address=self.cfg.sender.postal_address,
            **values,
        )

    def notice(self, kind: str, status: int, first: str | None = None) -> Response:
        """A page that says the same thing in both languages (we may not know the reader's)."""
        first = first if first in i18n.LANGUAGES else self.cfg.defaults.language
        order = [first, other_language(first)]
        contact = self.cfg.sender.unsubscribe_mailto or _address(self.cfg.sender.reply_to)
        parts = [
            {
                "lang": lang,
                "html": Markup(self.render(lang, "notice.html", kind=kind, contact=contact)),
            }
            for lang in order
        ]
        title = " / ".join(
            i18n.translations(self.cfg, lang, "web").gettext("Action alerts") for lang in order
        )
        return self.page(self.render(first, "message.html", parts=parts, title=title), status)

    @staticmethod
    def page(html: str, status: int = 200) -> Response:
        return Response(html, status=status, mimetype="text/html")

    # alerts and editions
    def alert_dir(self, alert_id: str) -> Path | None:
        if not ALERT_ID_RE.fullmatch(alert_id):
            return None
        path = self.cfg.path("alerts") / alert_id
        return path if path.is_dir() else None

    def edition(self, alert_id: str, lang: str, variant: str) -> Any:
        """A rendered edition, cached until a file of the alert or the templates changes."""
        from newsletter import content, render

        folder = self.alert_dir(alert_id)
        if folder is None:
            return None
        stamp = _tree_stamp(folder, self.cfg.path("templates"), self.cfg.path("locale"))
        key = (alert_id, lang, variant)
        with self._lock:
            hit = self._editions.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
        alert = content.load_alert(self.cfg, folder)
        if lang not in alert.languages:
            return None
        ed = render.render_edition(self.cfg, alert, lang, variant=variant)
        with self._lock:
            self._editions[key] = (stamp, ed)
        return ed

    def alert(self, alert_id: str) -> Any:
        from newsletter import content

        folder = self.alert_dir(alert_id)
        return None if folder is None else content.load_alert(self.cfg, folder)

    # tokens
    def token(self, purpose: str, token: str) -> links.TokenData:
        return links.read_token(self.secret, purpose, token, now=self.clock())

    def journal(self) -> Any:
        from newsletter.journal import Journal

        # The secret keys the hash of forwarders' IP addresses (kept two days, for the caps).
        return Journal(self.cfg.path("state"), secret=self.secret)


def _client_ip() -> str:
    """The client's address; behind a reverse proxy on this machine, the one it reports.

    Only a peer on loopback is trusted, and only for the last X-Forwarded-For entry (the one the
    proxy added itself): a client can prepend anything, not append. Without this, every forward
    through nginx would come from 127.0.0.1 and share one daily cap.
    """
    peer = request.remote_addr or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and peer in ("127.0.0.1", "::1"):
        last = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer
    return peer


def _subject(alert: Any, lang: str) -> str:
    text = alert.texts.get(lang) or alert.texts[alert.default_language]
    return str(text.subject)


def _address(value: str) -> str:
    from email.utils import parseaddr

    return parseaddr(value)[1] if value else ""


def _tree_stamp(*folders: Path) -> int:
    """A hash of every file's path, size and mtime: changes when an editor saves or adds one."""
    seen = []
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob("*"):
                try:
                    st = p.stat()
                except OSError:
                    continue
                seen.append((str(p), st.st_mtime_ns, st.st_size))
    return hash(tuple(sorted(seen)))


def redact(path: str) -> str:
    """A path fit for a log: a token is a member's key to their unsubscribe and forward pages."""
    return TOKEN_PATH_RE.sub(r"\1…", path)


class _App(Flask):
    def log_exception(self, exc_info: Any) -> None:
        """Flask's own line names the URL; this one names it without the token."""
        self.logger.error(
            "Exception on %s [%s]", redact(request.path), request.method, exc_info=exc_info
        )


def _request_handler() -> type:
    """werkzeug's request handler, logging paths without their tokens."""
    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            path = redact(getattr(self, "path", "?"))
            self.log(
                "info", '"%s %s %s" %s %s', self.command, path, self.request_version, code, size
            )

    return Handler


def create_app(cfg: Config, *, clock: Callable[[], float] = time.time) -> Flask:
    """The public pages as a Flask app. `clock` is for tests (token and CSRF ages, daily caps)."""
    secret = cfg.require_secret()
    app = _App(__name__)
    app.config.update(
        FORWARDS_PER_TOKEN_PER_DAY=FORWARDS_PER_TOKEN_PER_DAY,
        FORWARDS_PER_IP_PER_DAY=FORWARDS_PER_IP_PER_DAY,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    pages = _Pages(cfg, secret, clock)
    # Links in pages start with base_url's path, for a proxy that serves us under a prefix
    # (https://example.org/alerts/ → the proxy strips /alerts before passing requests on).
    root = urlsplit(links.base_url(cfg)).path.rstrip("/")
    app.extensions["newsletter"] = pages

    @app.after_request
    def security_headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # Token URLs must not leak to the sites a page links to.
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Frame-Options"] = "DENY"
        if request.path.startswith(("/f/", "/l/", "/u/")):
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["X-Robots-Tag"] = "noindex"
        return resp

    @app.errorhandler(404)
    def not_found(_err: Exception) -> Response:
        return pages.notice("not_found", 404)

    @app.errorhandler(405)
    def not_allowed(_err: Exception) -> Response:
        return pages.notice("error", 405)

    @app.errorhandler(413)
    def too_large(_err: Exception) -> Response:
        return pages.notice("error", 413)

    @app.errorhandler(500)
    def crashed(_err: Exception) -> Response:
        return pages.notice("error", 500)

    @app.errorhandler(NewsletterError)
    def broken_alert(err: NewsletterError) -> Response:
        # A broken alert or template: the editor sees it in the server log, readers a plain page.
        app.logger.error("%s", err.message)
        return pages.notice("error", 500)

    @app.errorhandler(links.BadToken)
    def bad_token(err: links.BadToken) -> Response:
        # Tampered, foreign, malformed or expired: we cannot know the reader's language.
        return pages.notice("expired" if err.reason == "expired" else "invalid", 400)

    # archive ------------------------------------------------------------------------------
    @app.get("/")
    def index() -> Response:
        from newsletter import content

        lang = request.args.get("lang", "")
        lang = lang if lang in i18n.LANGUAGES else cfg.defaults.language
        alerts = []
        # Only what went out: the alerts folder also holds next week's draft, and a send that
        # was planned but not confirmed reached nobody.
        with pages.journal() as j:
            published = {a for a in j.alerts() if j.counts(a)["sent"]}
        where = cfg.path("alerts")
        folders = (
            sorted((p for p in where.iterdir() if p.is_dir()), reverse=True)
            if where.is_dir()
            else []
        )
        for folder in folders:
            if folder.name not in published or not ALERT_ID_RE.fullmatch(folder.name):
                continue
            try:
                alert = content.load_alert(cfg, folder)
            except NewsletterError as err:
                app.logger.warning("index: skipping %s: %s", folder.name, err.message)
                continue
            entry = {
                "date": alert.date.isoformat(),
                "links": [
                    {"url": f"{root}/a/{alert.id}/{code}", "lang": code, "subject": text.subject}
                    for code in alert.languages
                    if (text := alert.texts.get(code)) is not None
                    and not WRITE_MARK_RE.search(text.subject)  # a draft (sent by mistake?)
                ],
            }
            if entry["links"]:
                alerts.append(entry)
        other = other_language(lang)
        return pages.page(
            pages.render(
                lang,
                "index.html",
                alerts=alerts,
                other=other,
                other_name=links.LANG_NAMES[other],
                other_url=f"{root}/?lang={other}",
            )
        )

    @app.get("/a/<alert_id>/<lang>")
    def archive(alert_id: str, lang: str) -> Response:
        if lang not in i18n.LANGUAGES:
            return pages.notice("not_found", 404)
        ed = pages.edition(alert_id, lang, "archive")
        if ed is None or WRITE_MARK_RE.search(ed.text):  # `newsletter new`'s blanks: a draft
            return pages.notice("not_found", 404, lang)
        # The archive variant has no member link; blank any token left so nothing leaks.
        html = tokens.fill(
            ed.html, {tokens.VIEW_URL: links.archive_url(cfg, alert_id, lang)}, escape_html=True
        )
        return pages.page(html)

    @app.get("/a/<alert_id>/<event_id>.ics")
    def calendar(alert_id: str, event_id: str) -> Response:
        from newsletter import render

        alert = pages.alert(alert_id)
        if alert is None or event_id not in alert.events:
            return pages.notice("not_found", 404)
        ics = render.event_ics(cfg, alert, event_id)
        resp = Response(ics, mimetype="text/calendar")
        resp.headers["Content-Disposition"] = f'attachment; filename="{event_id}.ics"'
        return resp

    # forward ------------------------------------------------------------------------------
    def forward_form(
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
        html = pages.render(
            data.lang,
            "forward.html",
            action=f"{root}/f/{token}",
            csrf=make_csrf(secret, "forward", token, pages.clock()),
            subject=_subject(alert, data.lang),
            archive_url=f"{root}/a/{alert.id}/{data.lang}",
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
        return pages.page(html, status)

    def forward_context(token: str) -> tuple[links.TokenData, Any, Any] | Response:
        data = pages.token("forward", token)  # BadToken: the 400 page
        alert = pages.alert(data.alert_id)
        if alert is None:
            return pages.notice("not_found", 404, data.lang)
        with pages.journal() as j:
            contact = j.get_contact(data.contact_id)
        return data, alert, contact

    @app.get("/f/<token>")
    def forward_get(token: str) -> Response:
        ctx = forward_context(token)
        if isinstance(ctx, Response):
            return ctx
        data, alert, contact = ctx
        name = contact.name if contact is not None else ""
        return forward_form(token, data, alert, name=name)

    @app.post("/f/<token>")
    def forward_post(token: str) -> Response:
        ctx = forward_context(token)
        if isinstance(ctx, Response):
            return ctx
        data, alert, contact = ctx
        form = request.form
        given = {
            "friends": form.getlist("to"),
            "name": form.get("name", ""),
            "note": form.get("note", ""),
            "chosen": form.get("lang", data.lang),
        }
        if not check_csrf(secret, "forward", token, form.get("csrf", ""), pages.clock()):
            return forward_form(
                token, data, alert, errors=[("form_expired", None)], status=400, **given
            )
        fwd, errors = check_forward(
            given["friends"], given["name"], given["note"], given["chosen"], alert.languages
        )
        if fwd is None:
            return forward_form(token, data, alert, errors=errors, status=400, **given)
        since = datetime.fromtimestamp(pages.clock() - DAY, UTC)
        ip = _client_ip()
        caps = app.config["FORWARDS_PER_TOKEN_PER_DAY"], app.config["FORWARDS_PER_IP_PER_DAY"]
        with pages.journal() as j:
            if (
                j.forwards_since(contact_id=data.contact_id, since=since) + len(fwd.friends)
                > caps[0]
            ):
                errors = [("limit_token", caps[0])]
            elif ip and j.forwards_since(ip=ip, since=since) + len(fwd.friends) > caps[1]:
                errors = [("limit_ip", None)]
            # A friend who unsubscribed gets nothing; the page lists them as not reached, without
            # saying why (that they unsubscribed is theirs to tell, not the forwarder's to learn).
            skipped = unsubscribed_friends(j, fwd.friends)
        if errors:
            return forward_form(token, data, alert, errors=errors, status=429, **given)
        reply_to = contact.email if contact is not None else None
        wanted = replace(fwd, friends=tuple(f for f in fwd.friends if f not in skipped))
        reached = []
        if wanted.friends:
            messages = forward_messages(
                cfg, alert, wanted, reply_to, pages.edition(alert.id, fwd.lang, "forward")
            )
            try:
                reached, _where = deliver_all(cfg, alert.id, messages)
            except NewsletterError as err:
                app.logger.error("forward: %s", err.message)
                reached = []
        if reached:
            with pages.journal() as j:
                j.record_forward(data.contact_id, ip, alert.id, len(reached))
        if not reached and wanted.friends:
            return forward_form(
                token, data, alert, errors=[("send_failed", None)], status=503, **given
            )
        html = pages.render(
            data.lang,
            "forward_done.html",
            sent=len(reached),
            missed=[f for f in fwd.friends if f not in reached],
            subject=_subject(alert, data.lang),
            archive_url=f"{root}/a/{alert.id}/{data.lang}",
        )
        return pages.page(html)

    # language -----------------------------------------------------------------------------
    @app.route("/l/<token>", methods=["GET", "POST"])
    def language(token: str) -> Response:
        data = pages.token("language", token)  # BadToken: the 400 page
        target = other_language(data.lang)
        values = {
            "target_name": links.LANG_NAMES[target],
            "archive_url": f"{root}/a/{data.alert_id}/{target}",
        }
        if request.method != "POST":  # GET and HEAD: never a change
            html = pages.render(
                target,
                "language.html",
                action=f"{root}/l/{token}",
                csrf=make_csrf(secret, "language", token, pages.clock()),
                **values,
            )
            return pages.page(html)
        if not check_csrf(secret, "language", token, request.form.get("csrf", ""), pages.clock()):
            return pages.notice("form_expired", 400, target)
        with pages.journal() as j:
            if j.get_contact(data.contact_id) is None:
                return pages.notice("no_contact", 404, target)
            j.set_language(data.contact_id, target)
        return pages.page(pages.render(target, "language_done.html", **values))

    # unsubscribe --------------------------------------------------------------------------
    @app.route("/u/<token>", methods=["GET", "POST"])
    def unsubscribe(token: str) -> Response:
        data = pages.token("unsubscribe", token)  # BadToken: the 400 page
        lang = data.lang
        if request.method != "POST":  # GET and HEAD: never a change
            if is_unsubscribed(data.contact_id):
                # Unsubscribed already (maybe by the mail client's one-click button, which
                # shows no page): this link is their way back.
                return unsubscribed_page(token, lang)
            other = other_language(lang)
            t_other = i18n.translations(cfg, other, "web")
            language_token = links.make_token(
                secret, "language", data.contact_id, data.alert_id, lang
            )
            html = pages.render(
                lang,
                "unsubscribe.html",
                action=f"{root}/u/{token}",
                other=other,
                other_heading=t_other.gettext("Would you rather read us in %(language)s?")
                % {"language": links.LANG_NAMES[other]},
                other_link=t_other.gettext("Get our emails in %(language)s")
                % {"language": links.LANG_NAMES[other]},
                language_url=f"{root}/l/{language_token}",
            )
            return pages.page(html)
        one_click = request.form.get("List-Unsubscribe") == "One-Click"
        if not one_click and request.form.get("confirm") != "1":
            return pages.notice("error", 400, lang)
        with pages.journal() as j:
            contact = j.get_contact(data.contact_id)
            if contact is None:
                return pages.notice("no_contact", 404, lang)
            j.suppress(contact.email, "one-click" if one_click else "unsubscribe page")
        return unsubscribed_page(token, lang)

    def is_unsubscribed(contact_id: int) -> bool:
        with pages.journal() as j:
            contact = j.get_contact(contact_id)
            return contact is not None and j.is_suppressed(contact.email)

    def unsubscribed_page(token: str, lang: str) -> Response:
        html = pages.render(
            lang,
            "unsubscribed.html",
            resubscribe_action=f"{root}/u/{token}/resubscribe",
            csrf=make_csrf(secret, "resubscribe", token, pages.clock()),
        )
        return pages.page(html)

    @app.post("/u/<token>/resubscribe")
    def resubscribe(token: str) -> Response:
        data = pages.token("unsubscribe", token)  # BadToken: the 400 page
        if not check_csrf(
            secret, "resubscribe", token, request.form.get("csrf", ""), pages.clock()
        ):
            return pages.notice("form_expired", 400, data.lang)
        with pages.journal() as j:
            contact = j.get_contact(data.contact_id)
            if contact is None:
                return pages.notice("no_contact", 404, data.lang)
            j.unsuppress(contact.email)
        return pages.page(pages.render(data.lang, "resubscribed.html"))

    return app


def run_serve(cfg: Config, host: str, port: int) -> None:
    """`newsletter serve`: the public pages on host:port until Ctrl+C."""
    import click
    from werkzeug.serving import make_server

    base = links.base_url(cfg)
    if not base:
        if host not in ("127.0.0.1", "localhost", "::1"):
            links.require_base_url(cfg)
        click.echo(
            f"warning: {cfg.source}: [web] base_url is not set, so emails carry no links to these "
            "pages; serving for local use only.",
            err=True,
        )
    if not cfg.smtp.host:
        click.echo(
            f"warning: {cfg.source}: [smtp] host is not set, so forwards from the form are "
            f"written to {cfg.path('outbox')}/<alert>/forwards/, not sent.",
            err=True,
        )
    app = create_app(cfg)
    try:
        server = make_server(host, port, app, threaded=True, request_handler=_request_handler())
    except OSError as err:
        raise NewsletterError(
            f"cannot listen on {host}:{port} ({err.strerror}). Pick another --port."
        ) from None
    click.echo(f"Serving the public pages on http://{host}:{server.port}/ (Ctrl+C to stop)")
    if base:
        click.echo(f"Emails link here as {base}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
