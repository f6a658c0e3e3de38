"""What every family of public pages shares: the Pages object, CSRF fields, headers, error pages.

The Pages object (config, secret, clock, the edition cache, the journal opener) lives in
`app.extensions["newsletter"]`; blueprints reach it through `pages()`, so a view is a plain
function and `create_app` only wires.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from itsdangerous import BadSignature, Signer
from markupsafe import Markup

from newsletter import i18n, links, resources
from newsletter.config import Config
from newsletter.errors import NewsletterError

CSRF_MAX_AGE = 6 * 3600  # a form left open this long must be reloaded
ALERT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
TOKEN_PATH_RE = re.compile(r"^(/[flcu]/)[^/?#]+")  # /c/: a sign-up's confirmation link
ANY_TOKEN_PATH_RE = re.compile(r"(/[flcu]/)[^/?#\s\"']+")  # anywhere in a log message
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def other_language(lang: str) -> str:
    """The language a member switches to from `lang` (two languages: es and en)."""
    return "en" if lang == "es" else "es"


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


# --- the shared state of the views ---------------------------------------------------------------


class Pages:
    """What the views share: config, secret, clock, template environments, the edition cache."""

    def __init__(self, cfg: Config, secret: str, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.secret = secret
        self.clock = clock
        # Links in pages start with base_url's path, for a proxy that serves us under a prefix
        # (https://example.org/alerts/ → the proxy strips /alerts before passing requests on).
        self.root = urlsplit(links.base_url(cfg)).path.rstrip("/")
        self._lock = threading.Lock()
        self._editions: dict[tuple[str, str, str], tuple[int, Any]] = {}
        # What a family of pages keeps between requests (archive: the published alerts and the
        # index pages); dict operations are atomic, so threads need no lock for it.
        self.memo: dict[str, Any] = {}

    # templates
    def render(self, lang: str, template: str, /, **values: Any) -> str:
        """A page of templates/web/ in `lang`, with the organisation's name and address."""
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
        """An HTML response."""
        return Response(html, status=status, mimetype="text/html")

    # alerts and editions
    def alert_dir(self, alert_id: str) -> Path | None:
        """The alert's folder, or None for an id that is malformed or names no folder."""
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
        stamp = tree_stamp(folder, *resources.watched_folders(self.cfg))
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
        """The alert read from its folder, or None."""
        from newsletter import content

        folder = self.alert_dir(alert_id)
        return None if folder is None else content.load_alert(self.cfg, folder)

    # tokens
    def token(self, purpose: str, token: str) -> links.TokenData:
        """The token's data; links.BadToken (the 400 page) when it is not ours or too old."""
        return links.read_token(self.secret, purpose, token, now=self.clock())

    def contact(self, data: links.TokenData) -> Any:
        """The person a link names (contacts.Contact), or None when this state file has none."""
        from newsletter.contacts import Contacts

        with self.journal() as j:
            return Contacts(j).linked(data.person, data.issued)

    def journal(self) -> Any:
        """A Journal on the state file, to be used in a `with`."""
        from newsletter.journal import Journal

        # The secret keys the hash of forwarders' IP addresses (kept two days, for the caps).
        return Journal(self.cfg.path("state"), secret=self.secret)


def pages() -> Pages:
    """The running app's Pages."""
    return current_app.extensions["newsletter"]


def client_ip() -> str:
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


def subject(alert: Any, lang: str) -> str:
    """The alert's subject in `lang`, else in its default language."""
    text = alert.texts.get(lang) or alert.texts[alert.default_language]
    return str(text.subject)


def _address(value: str) -> str:
    from email.utils import parseaddr

    return parseaddr(value)[1] if value else ""


def tree_stamp(*folders: Path) -> int:
    """A hash of every file's and folder's path, size and mtime under `folders`: changes when an
    editor saves, adds or removes one. os.scandir, not Path.rglob: the archive index asks this
    for every published alert on each request (300 alerts: ~1,000 entries)."""
    seen = []
    stack = [str(f) for f in folders]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    try:
                        st = e.stat(follow_symlinks=False)
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                    except OSError:
                        continue
                    seen.append((e.path, st.st_mtime_ns, st.st_size))
        except OSError:  # gone, or not a folder
            continue
    seen.sort()
    return hash(tuple(seen))


def redact(path: str) -> str:
    """A path fit for a log: a token is a member's key to their unsubscribe and forward pages;
    control characters are escaped (see log_safe)."""
    return log_safe(TOKEN_PATH_RE.sub(r"\1…", path))


def redact_all(text: str) -> str:
    """`text` with a member token cut out wherever a page path appears in it (a log message
    that quotes a request path, such as the WSGI server's)."""
    return ANY_TOKEN_PATH_RE.sub(r"\1…", text)


def log_safe(text: str, keep: str = "") -> str:
    """`text` with every character that is not printable (controls, format characters such as
    U+202E, line separators) written as a Python escape: a request path cannot move the
    terminal's cursor, clear the screen or fake a second log line. Characters in `keep` stay."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c == " " or c in keep else ascii(c)[1:-1] for c in text
    )


class App(Flask):
    """Flask, with an exception log line that does not carry the member's token."""

    def log_exception(self, exc_info: Any) -> None:
        """Flask's own line names the URL; this one names it without the token."""
        self.logger.error(
            "Exception on %s [%s]", redact(request.path), request.method, exc_info=exc_info
        )


# --- headers and error pages, for every page -----------------------------------------------------


def security_headers(resp: Response) -> Response:
    """No framing, no sniffing, no referrer; token pages are neither cached nor indexed."""
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    # Token URLs must not leak to the sites a page links to.
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    if request.path.startswith(("/f/", "/l/", "/u/", "/c/")):
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Robots-Tag"] = "noindex"
    return resp


def register_error_pages(app: Flask) -> None:
    """Every error is a plain bilingual page: no traceback, no Flask default."""
    for status, kind in ((404, "not_found"), (405, "error"), (413, "error"), (500, "error")):
        app.register_error_handler(status, lambda _err, s=status, k=kind: pages().notice(k, s))

    @app.errorhandler(NewsletterError)
    def broken_alert(err: NewsletterError) -> Response:
        # A broken alert or template: the editor sees it in the server log, readers a plain page.
        app.logger.error("%s", err.message)
        return pages().notice("error", 500)

    @app.errorhandler(links.BadToken)
    def bad_token(err: links.BadToken) -> Response:
        # Tampered, foreign, malformed or expired: we cannot know the reader's language.
        return pages().notice("expired" if err.reason == "expired" else "invalid", 400)
