"""`newsletter serve`: the public pages on waitress, a production WSGI server.

Why waitress, not gunicorn (and not Werkzeug's development server, which it replaces):
- its main thread reads requests asynchronously and gives a request to the bounded pool of
  worker threads only once all of it has arrived, so a slow or half-sent request holds a socket,
  not a thread (300 half-sent requests held 301 threads of the development server for minutes);
  gunicorn's sync workers are held by slow clients and expect a buffering proxy in front;
- it drops a connection idle for CHANNEL_TIMEOUT seconds, and caps how many it keeps;
- pure Python, one process: nothing to fork or supervise beside one SQLite file, and the same on
  every machine this runs on, tests included.
It sends no Server header (`ident` empty): the version of what serves the pages is nobody's
business. Requests are logged by `AccessLog`, one line each, with member tokens cut out and
control characters escaped (`common.log_safe`); so is every other log line (`SafeFormatter`).
"""

from __future__ import annotations

import logging
import resource
import sys
from collections.abc import Callable, Iterable
from typing import Any

from newsletter import links
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.web.common import log_safe, redact, redact_all

THREADS = 4  # default worker threads: requests run in parallel (one SQLite writer at a time)
CHANNEL_TIMEOUT = 30  # seconds a connection may stay silent, a stalled request's too
CONNECTION_LIMIT = 1000  # open connections; past it, new ones wait in the listen queue
CLEANUP_INTERVAL = 5  # seconds between checks for connections past CHANNEL_TIMEOUT
MAX_HEADER = 32 * 1024  # bytes of request line and headers
MAX_BODY = 128 * 1024  # bytes of a request body (the app itself refuses over 64 KiB)

log = logging.getLogger("newsletter.web.access")


class AccessLog:
    """WSGI middleware: one line per request, `client "METHOD PATH PROTOCOL" status`, with the
    member's token cut out of the path and control characters escaped."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        status = "-"

        def started(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status
            status = code.split(" ", 1)[0]
            return start_response(code, headers, exc_info)

        try:
            return self.app(environ, started)
        finally:
            log.info(
                '%s "%s %s %s" %s',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD", "-"),
                redact(request_path(environ)),
                environ.get("SERVER_PROTOCOL", "-"),
                status,
            )


def request_path(environ: dict[str, Any]) -> str:
    """The path and query asked for, as text (WSGI gives the path as Latin-1 of its bytes)."""
    raw = environ.get("PATH_INFO", "")
    try:
        path = raw.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        path = raw
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


class SafeFormatter(logging.Formatter):
    """Every log line without member tokens and with control characters escaped (a request
    path, or waitress's own messages that quote one, cannot put terminal escapes in the log).
    A traceback keeps its line breaks; a message has none."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.msg, record.args = log_safe(redact_all(record.getMessage())), None
        return log_safe(super().format(record), keep="\n")


def _logging() -> None:
    """Log lines to stderr, timestamped, made safe by SafeFormatter, before the app exists
    (so Flask adds no handler of its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _enough_files(needed: int) -> None:
    """Raise the open-files limit toward `needed` (one per connection), as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def make_server(
    cfg: Config, host: str, port: int, threads: int = THREADS, *, app: Any = None
) -> Any:
    """The app (`create_app(cfg)` unless given) on a waitress server listening on host:port (0: a
    free port): `.run()` serves until `stop(server)` or Ctrl+C."""
    import waitress

    from newsletter.web import create_app

    _enough_files(CONNECTION_LIMIT + 64)
    app = AccessLog(app if app is not None else create_app(cfg))
    try:
        return waitress.create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            channel_timeout=CHANNEL_TIMEOUT,
            cleanup_interval=CLEANUP_INTERVAL,
            connection_limit=CONNECTION_LIMIT,
            max_request_header_size=MAX_HEADER,
            max_request_body_size=MAX_BODY,
            asyncore_use_poll=True,  # select() stops at 1,024 descriptors
            ident="",  # no Server header
            expose_tracebacks=False,
            # X-Forwarded-For from a proxy on loopback is read by common.client_ip.
            clear_untrusted_proxy_headers=False,
        )
    except OSError as err:
        raise NewsletterError(
            f"cannot listen on {host}:{port} ({err.strerror}). Pick another --port."
        ) from None


def stop(server: Any) -> None:
    """End `server.run()` from another thread: the workers finish, every socket closes."""
    from waitress import wasyncore

    server.task_dispatcher.shutdown()
    wasyncore.close_all(server._map)


def _refused_state(cfg: Config) -> None:
    """Open the state file once before listening: a refused one (empty, foreign, lost with a
    backup beside it, a permission fault) stops `serve` with its one-line error, instead of a
    server whose every page is a generic 500 (each request opens the file and is refused)."""
    from newsletter.journal import Journal

    with Journal(cfg.path("state"), secret=cfg.require_secret()):  # the secret's error first
        pass


def run_serve(cfg: Config, host: str, port: int, threads: int = THREADS) -> None:
    """`newsletter serve`: the public pages on host:port until Ctrl+C."""
    import click

    base = links.base_url(cfg)
    if not base:
        if host not in ("127.0.0.1", "localhost", "::1"):
            links.require_base_url(cfg)
        click.echo(
            f"warning: {cfg.source}: [web] base_url is not set, so emails carry no links to these "
            "pages; serving for local use only.",
            err=True,
        )
    if not (cfg.smtp.host or cfg.smtp.relay):  # a [[smtp.relay]] pool sends them too
        click.echo(
            f"warning: {cfg.source}: [smtp] host is not set, so forwards from the form are "
            f"written to {cfg.path('outbox')}/<alert>/forwards/ and sign-up emails to "
            f"{cfg.path('outbox')}/subscribe/, not sent.",
            err=True,
        )
    _refused_state(cfg)
    _logging()
    server = make_server(cfg, host, port, threads)
    # One socket (its port, when --port 0), or one per address a host name resolves to.
    where = getattr(server, "effective_listen", None) or [(host, server.effective_port)]
    urls = ", ".join(f"http://{h if ':' not in h else f'[{h}]'}:{p}/" for h, p in where)
    click.echo(f"Serving the public pages on {urls} ({threads} threads; Ctrl+C to stop)")
    if base:
        click.echo(f"Emails link here as {base}/")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
