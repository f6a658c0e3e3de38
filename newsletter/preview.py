"""`newsletter preview`: the alert served on 127.0.0.1, re-rendered when a template or content changes.

A watcher thread polls file times every quarter second; on a change it renders every edition once
and bumps a version counter. The index page long-polls `/events?since=N` and reloads itself when
the version moves, so a saved file shows within a second. A render error (template syntax, bad
content) is kept and shown in the page with file and line; the server keeps running.

The page shows members' names and, with a base URL and the secret, their signed links: it answers
only requests addressed to this machine (Host 127.0.0.1, localhost or [::1] with its port), so a
web page the editor visits cannot read it through a DNS name rebound to 127.0.0.1; anything else
gets 403 and no content. A GET writes nothing: a picked member's links are made from the state
file opened read-only; one who is not in it yet gets sample links and a button whose POST (same
origin only) adds them, so their links can be tried on `newsletter serve`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import signal
import sqlite3
import threading
import traceback
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import jinja2

from newsletter import check, content, links, message, recipients, render, resources, tokens
from newsletter.config import Config
from newsletter.contacts import Contacts
from newsletter.errors import NewsletterError
from newsletter.journal import Journal

POLL_SECONDS = 0.25  # file watch interval: a save shows in well under a second
LONG_POLL_SECONDS = 20.0  # an idle /events request returns after this, and the page asks again
MAX_PICKER = 500  # a picker of thousands helps nobody; the first rows are enough to look at
MAX_WATCHED_FILES = 5000  # bounded walk: a stray huge folder must not stall the watcher
VARIANTS = ("member", "forward", "archive")
VARIANT_LABELS = {"member": "Member", "forward": "Friend's copy", "archive": "Web archive"}
DEFAULT_RECIPIENTS = "recipients/sample.csv"
PHONE_WIDTH = 375
DESKTOP_WIDTH = 680  # room for the 600 px layout and its margins
PLACE_RE = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+): (?P<message>.*)$", re.S)


@dataclass(frozen=True)
class RenderError:
    """A problem that stopped rendering, with the file and line to fix when known."""

    message: str
    file: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.file and self.line else self.file
        return f"{where}: {self.message}" if where else self.message

    def excerpt(self, root: Path, context: int = 2) -> list[tuple[int, str]]:
        """(number, text) of the lines around the error, to show it where it is."""
        if not (self.file and self.line):
            return []
        path = Path(self.file) if Path(self.file).is_absolute() else root / self.file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        first = max(1, self.line - context)
        return [(n, lines[n - 1]) for n in range(first, min(len(lines), self.line + context) + 1)]


@dataclass(frozen=True)
class Copy:
    """One language's rendered email, as a member would get it (sample links filled)."""

    lang: str
    subject: str
    preheader: str
    html: str
    text: str
    edition: render.Edition  # with tokens, for filling a picked recipient's copy


@dataclass
class Snapshot:
    version: int = 0
    copies: dict[tuple[str, str], Copy] = field(default_factory=dict)  # (lang, variant) -> copy
    languages: list[str] = field(default_factory=list)
    error: RenderError | None = None
    alert_id: str = ""
    recipients: list[recipients.Recipient] = field(default_factory=list)  # for the picker
    recipients_note: str = ""  # why the picker is empty or partial


def describe_error(cfg: Config, err: BaseException) -> RenderError:
    """File and line of a template or content error, relative to the project when possible."""

    def rel(path: str | None) -> str:
        if not path:
            return ""
        with contextlib.suppress(ValueError):
            return str(Path(path).resolve().relative_to(cfg.root))
        return path

    if isinstance(err, jinja2.TemplateSyntaxError):
        return RenderError(err.message or str(err), rel(err.filename or err.name), err.lineno)
    if isinstance(err, NewsletterError):
        # Our errors start "path:line: …" when they know the place (content, wrapped Jinja errors).
        msg = err.format_message()
        m = PLACE_RE.match(msg)
        if m:
            return RenderError(m["message"], rel(m["file"]), int(m["line"]))
        return RenderError(msg)
    # Jinja rewrites tracebacks so that template frames carry the template's file and line.
    templates = tuple(str(f.resolve()) for f in resources.watched_folders(cfg))
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if str(Path(frame.filename).resolve()).startswith(templates):
            return RenderError(f"{type(err).__name__}: {err}", rel(frame.filename), frame.lineno)
    return RenderError(f"{type(err).__name__}: {err}")


class PreviewServer:
    """The preview: `PreviewServer(cfg, alert_path, port=0).start()`, then `.url`, then `.stop()`."""

    def __init__(
        self,
        cfg: Config,
        alert_path: Path,
        *,
        port: int = 0,
        recipients_csv: Path | None = None,
    ) -> None:
        if not Path(alert_path).is_dir():
            raise NewsletterError(f"{alert_path}: no such alert folder. Give the alert's folder.")
        self.cfg = cfg
        self.alert_path = Path(alert_path)
        if recipients_csv is None and (cfg.root / DEFAULT_RECIPIENTS).is_file():
            recipients_csv = cfg.root / DEFAULT_RECIPIENTS
        elif recipients_csv is not None and not Path(recipients_csv).is_file():
            raise NewsletterError(f"{recipients_csv}: no such recipient CSV. Check --recipients.")
        self.recipients_csv = recipients_csv
        self.snapshot = Snapshot()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        pages = resources.template_dirs(cfg, "preview")  # the site's, then the packaged
        if not any((p / "index.html").is_file() for p in pages):
            raise NewsletterError(
                f"{pages[-1] / 'index.html'}: the preview page's template is missing. "
                "Reinstall newsletter (or restore templates/preview/ in a checkout)."
            )
        self._pages = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(p) for p in pages]),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        try:
            self.httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise NewsletterError(
                    f"127.0.0.1:{port} is in use. Stop the other server or pass --port 0 "
                    "(any free port)."
                ) from None
            raise NewsletterError(f"127.0.0.1:{port}: cannot listen ({err}).") from None
        self.httpd.preview = self
        self._signature = self._watch_signature()
        self.render()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    # --- rendering ------------------------------------------------------------------------------

    def render(self) -> Snapshot:
        """Render every edition once; keep the error instead on failure. Bumps the version."""
        copies: dict[tuple[str, str], Copy] = {}
        error = None
        alert_id = self.snapshot.alert_id
        languages: list[str] = []
        people, note = self._read_recipients()
        try:
            alert = content.load_alert(self.cfg, self.alert_path)
            alert_id, languages = alert.id, list(alert.languages)
            for lang in alert.languages:
                for variant in VARIANTS:
                    edition = render.render_edition(self.cfg, alert, lang, variant=variant)
                    filled = render.fill_edition(edition, self._sample_values(edition))
                    copies[lang, variant] = Copy(
                        lang, edition.subject, edition.preheader, filled.html, filled.text, edition
                    )
        except Exception as err:  # any failure is shown in the page; the server must keep running
            error = describe_error(self.cfg, err)
            click.echo(f"preview: {error}", err=True)
        with self._changed:
            self.snapshot = Snapshot(
                version=self.snapshot.version + 1,
                copies=copies if error is None else {},
                languages=languages,
                error=error,
                alert_id=alert_id,
                recipients=people,
                recipients_note=note,
            )
            self._changed.notify_all()
        return self.snapshot

    def _read_recipients(self) -> tuple[list[recipients.Recipient], str]:
        """The picker's recipients from the CSV (first MAX_PICKER), and a note on what is wrong."""
        path = self.recipients_csv
        if path is None:
            return [], ""
        try:
            report = recipients.read_csv(path, self.cfg.defaults.language)
        except NewsletterError as err:
            return [], err.format_message()
        people = report.recipients[:MAX_PICKER]
        note = ""
        if report.problems:
            note = (
                f"{path}: {len(report.problems)} row(s) skipped; run `newsletter recipients check`"
            )
        if len(report.recipients) > MAX_PICKER:
            note = f"{path}: showing the first {MAX_PICKER} of {len(report.recipients)} recipients"
        return people, note

    def _sample_values(self, edition: render.Edition) -> dict[str, str]:
        """What each copy shows before a recipient is picked: as `build` and a forward fill it."""
        if edition.variant == "member":
            return check.sample_values(self.cfg, edition)
        if edition.variant == "forward":
            from newsletter import web  # Flask: only needed here

            return {
                tokens.FORWARD_INTRO: web.forward_intro(self.cfg, edition.lang, render.SAMPLE_NAME),
                tokens.FORWARD_NOTE: "",
                tokens.VIEW_URL: links.archive_url(self.cfg, edition.alert_id, edition.lang),
            }
        return {}  # the archive copy carries no token

    def recipient(self, line: str | None) -> recipients.Recipient | None:
        """The picked recipient (by CSV line number), or None for the sample member."""
        for r in self.snapshot.recipients:
            if line is not None and str(r.line) == line:
                return r
        return None

    def copy_for(self, lang: str, line: str | None, variant: str = "member") -> Copy | None:
        """The email as the picked recipient gets it (their name, fields and links), else the sample."""
        copy = self.snapshot.copies.get((lang, variant))
        person = self.recipient(line) if variant == "member" else None
        if copy is None or person is None:
            return copy
        edition = copy.edition
        prepared = message.prepare(self.cfg, edition)
        filled = render.fill_edition(
            edition, prepared.values(person, self._links_for(edition, person))
        )
        return dataclasses.replace(copy, html=filled.html, text=filled.text)

    def _links_for(self, edition: render.Edition, person: recipients.Recipient) -> dict[str, str]:
        """Working links for `newsletter serve` when it can make them (base URL and secret set,
        the member in the state file); sample links otherwise."""
        public_id = self.public_id(person) if self.live_links else None
        if public_id is None:
            return check.sample_links(self.cfg, edition)
        return links.edition_links(self.cfg, edition, public_id)

    @property
    def live_links(self) -> bool:
        """True when a picked member's links can work against `newsletter serve`."""
        return bool(links.base_url(self.cfg) and self.cfg.secret)

    def public_id(self, person: recipients.Recipient) -> str | None:
        """What the member's links carry, read from the state file without writing to it; None
        when they are not in it (never sent to) or the file is of an older schema."""
        state = self.cfg.path("state")
        if not state.exists():
            return None
        try:
            with Journal(state, readonly=True) as journal:
                contact = Contacts(journal).find(person.email)
        except sqlite3.Error:  # an older file, upgraded by its next writer: samples till then
            return None
        return contact.public_id if contact is not None else None

    def add_contact(self, line: str) -> recipients.Recipient | None:
        """The POST behind the page's button: the picked member into the state file, as a send
        would record them, so their links work on `newsletter serve`. None: no such pick."""
        person = self.recipient(line)
        if person is not None:
            with Journal(self.cfg.path("state"), secret=self.cfg.secret) as journal:
                Contacts(journal).add(person.email, person.name)
        return person

    def _watched_roots(self) -> list[Path]:
        roots = [self.alert_path]
        if self.recipients_csv is not None:
            roots.append(self.recipients_csv)
        return roots + resources.watched_folders(self.cfg)

    def _watch_signature(self) -> tuple[tuple[str, int, int], ...]:
        sig = []
        for root in self._watched_roots():
            if root.is_file():
                with contextlib.suppress(OSError):
                    st = root.stat()
                    sig.append((str(root), st.st_mtime_ns, st.st_size))
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
                for name in filenames:
                    if name.startswith(".") or name.endswith(("~", ".swp", ".tmp")):
                        continue  # editors' temp files appear and vanish while saving
                    p = os.path.join(dirpath, name)
                    with contextlib.suppress(OSError):
                        st = os.stat(p)
                        sig.append((p, st.st_mtime_ns, st.st_size))
                    if len(sig) >= MAX_WATCHED_FILES:
                        return tuple(sorted(sig))
        return tuple(sorted(sig))

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            sig = self._watch_signature()
            if sig != self._signature:
                self._signature = sig
                self.render()

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the version differs from `since` (or timeout / stop); return the version."""
        with self._changed:
            self._changed.wait_for(
                lambda: self.snapshot.version != since or self._stop.is_set(), timeout=timeout
            )
            return self.snapshot.version

    # --- pages ----------------------------------------------------------------------------------

    def index_page(
        self, lang: str | None, line: str | None = None, variant: str | None = None
    ) -> str:
        snap = self.snapshot
        languages = snap.languages or ["es", "en"]
        variant = variant if variant in VARIANTS else "member"
        person = self.recipient(line) if variant == "member" else None
        if lang not in languages:
            # a picked recipient is shown in the language they get
            lang = person.language if person and person.language in languages else languages[0]
        template = self._pages.get_template("index.html")
        try:
            copy, copy_error = self.copy_for(lang, line, variant), None
            # Links that could work on serve, but the member is not in the state file yet.
            unknown = person if person and self.live_links and not self.public_id(person) else None
        except NewsletterError as err:
            copy, copy_error, unknown = None, err.format_message(), None
        return template.render(
            snap=snap,
            lang=lang,
            languages=languages,
            copy=copy,
            person=person,
            r=str(person.line) if person else "",
            variant=variant,
            variants=VARIANT_LABELS,
            copy_error=copy_error,
            unknown=unknown,
            state=self.cfg.path("state").name,
            error=snap.error,
            excerpt=snap.error.excerpt(self.cfg.root) if snap.error else [],
            alert_path=str(self.alert_path),
            phone_width=PHONE_WIDTH,
            desktop_width=DESKTOP_WIDTH,
            sources=resources.sources(self.cfg, tuple(languages)),
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> PreviewServer:
        """Serve and watch in background threads."""
        # serve_forever checks for shutdown every poll_interval: short, so Ctrl-C stops at once
        serve = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="preview-http"
        )
        watch = threading.Thread(target=self._watch, name="preview-watch")
        with _ctrl_c_for_the_main_thread_only():
            for t in (serve, watch):
                t.daemon = True
                t.start()
                self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop watching and serving; release the port."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()  # long-polls return at once
        if self._threads:
            self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    def wait(self) -> None:
        """Block until stop() (or Ctrl-C in the main thread)."""
        while not self._stop.wait(3600):
            pass

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


HEAD_RE = re.compile(r"<head\b[^>]*>", re.I)


def open_links_outside(html: str) -> str:
    """The email with its links opening a new tab, as a mail client does.

    In the preview's iframe a click would load the page inside the frame, and `newsletter serve`
    refuses to be framed (X-Frame-Options: DENY): the picked member's links would show nothing.
    """
    base = '<base target="_blank">'
    m = HEAD_RE.search(html)
    return html[: m.end()] + base + html[m.end() :] if m else base + html


@contextlib.contextmanager
def _ctrl_c_for_the_main_thread_only() -> Iterator[None]:
    """Threads started inside block SIGINT, and so do the threads they start (request threads).

    Ctrl-C stops the preview by raising KeyboardInterrupt in the main thread, asleep in
    `wait()`. The kernel gives a signal sent to the process to any thread that does not block
    it; when another thread took it (one being created does, as a request comes in), Python
    ran its handler there and the main thread slept on: Ctrl-C was ignored until killed (seen
    under load; 3 of 10 runs with requests arriving). With SIGINT blocked everywhere else,
    only the main thread can take it. A thread inherits its creator's mask, so it is blocked
    here, around the starts, and put back.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to do
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser's pending long-poll must not hold up Ctrl-C
    allow_reuse_address = True
    preview: PreviewServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (stdlib's signature)
        """Quiet: a page long-polls every 20 s and would flood the terminal."""

    def host_allowed(self) -> bool:
        """The request names this machine: Host is 127.0.0.1, localhost or [::1] with our port.

        A page on another site can make the browser connect here by rebinding its own DNS name
        to 127.0.0.1; its requests then carry that name as Host. Refused, they read nothing.
        """
        port = self.server.server_address[1]
        host = self.headers.get("Host", "").strip().lower()
        names = ("127.0.0.1", "localhost", "[::1]")
        return host in {f"{n}:{port}" for n in names} | (set(names) if port == 80 else set())

    def refuse(self) -> None:
        """403, no content: nothing about the alert, its members or this server."""
        self.send_response(HTTPStatus.FORBIDDEN)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802  (stdlib's name)
        """The one write: POST /contacts (r=LINE) adds a picked member to the state file.

        Only from the preview's own page: Host as above, and Origin the same, which a browser
        always sends with a form POST (another site's form cannot forge it).
        """
        host = self.headers.get("Host", "")
        if not self.host_allowed() or self.headers.get("Origin", "") != f"http://{host}":
            return self.refuse()
        preview = self.server.preview
        try:
            size = min(int(self.headers.get("Content-Length", "0")), 4096)
        except ValueError:
            size = 0
        form = {k: v[-1] for k, v in parse_qs(self.rfile.read(size).decode("latin-1")).items()}
        if urlsplit(self.path).path != "/contacts":
            return self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")
        try:
            person = preview.add_contact(form.get("r", ""))
        except NewsletterError as err:
            return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", f"{err.message}\n")
        if person is None:
            return self._send(HTTPStatus.BAD_REQUEST, "text/plain", "no such recipient\n")
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", f"/?r={person.line}&lang={person.language}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802  (stdlib's name)
        if not self.host_allowed():
            return self.refuse()
        preview = self.server.preview
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        try:
            if path == "/":
                page = preview.index_page(query.get("lang"), query.get("r"), query.get("variant"))
                self._send(HTTPStatus.OK, "text/html", page)
            elif path == "/events":
                try:
                    since = int(query.get("since", "-1"))
                except ValueError:
                    since = -1
                version = preview.wait_for_change(since, LONG_POLL_SECONDS)
                self._send(HTTPStatus.OK, "application/json", json.dumps({"version": version}))
            elif path.startswith("/email/") and path.endswith((".html", ".txt")):
                self._send_email(path.removeprefix("/email/"), query.get("r"), query.get("variant"))
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", "not found\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away mid-reply (a reload): nothing to do
        except Exception as err:  # a broken preview template must not kill the server either
            msg = str(describe_error(preview.cfg, err))
            with contextlib.suppress(OSError):
                self._send(
                    HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", f"preview error: {msg}\n"
                )

    def _send_email(self, name: str, line: str | None, variant: str | None) -> None:
        snap = self.server.preview.snapshot
        lang, _, ext = name.partition(".")
        copy = self.server.preview.copy_for(lang, line, variant or "member")
        if snap.error is not None:
            body = f"{snap.error}\n"
            self._send(HTTPStatus.OK, "text/plain", body)
        elif copy is None:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", f"no {lang} edition\n")
        elif ext == "html":
            self._send(HTTPStatus.OK, "text/html", open_links_outside(copy.html))
        else:
            self._send(HTTPStatus.OK, "text/plain", copy.text)

    def _send(self, status: HTTPStatus, ctype: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # Framed only by the preview's own page (its two email frames): another site could
        # otherwise hide it under a decoy and have the editor press its button (clickjacking).
        self.send_header("X-Frame-Options", "SAMEORIGIN")
        self.send_header("Content-Security-Policy", "frame-ancestors 'self'")
        # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the
        # form POST, which do_POST (rightly) refuses.
        self.send_header("Referrer-Policy", "same-origin")
        self.end_headers()
        self.wfile.write(data)


def run_preview(
    cfg: Config,
    alert_path: Path,
    *,
    port: int = 8025,
    open_browser: bool = True,
    recipients_csv: Path | None = None,
) -> None:
    """Serve the preview until Ctrl-C."""
    server = PreviewServer(cfg, alert_path, port=port, recipients_csv=recipients_csv).start()
    try:
        click.echo(f"Preview of {alert_path} at {server.url}  (Ctrl-C stops)")
        if open_browser:
            webbrowser.open(server.url)
        server.wait()
    except KeyboardInterrupt:
        click.echo("\npreview stopped.")
    finally:
        server.stop()
