"""`newsletter serve`: the public pages on a listening socket."""

from __future__ import annotations

from newsletter import links
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.web.common import redact


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
            f"written to {cfg.path('outbox')}/<alert>/forwards/ and sign-up emails to "
            f"{cfg.path('outbox')}/subscribe/, not sent.",
            err=True,
        )
    from newsletter.web import create_app

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
