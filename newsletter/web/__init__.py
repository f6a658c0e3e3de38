"""The public pages (`newsletter serve`): archive, forward to a friend, language switch, unsubscribe.

One module per family of pages, each a Flask blueprint; `create_app` only wires them:

    common   the shared Pages object (config, clock, edition cache, journal), CSRF, headers,
             error pages
    archive  /, /a/<id>/<lang>, /a/<id>/<event>.ics
    forward  /f/<token>, and `newsletter forward` (same checks, same copy, same delivery)
    member   /l/<token> (language), /u/<token> (unsubscribe, resubscribe)
    subscribe /s (sign-up form), /c/<token> (confirm): double opt-in, newsletter/subscribers.py
    serve    `newsletter serve`

Every page that changes state does so only on POST: mail scanners follow every link in a message
with GET. The signed token in the URL is the authority (it names a contact, never an address);
forms that send mail also carry a CSRF field signed for that token and a time, so no cookie is
needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask

from newsletter.config import Config
from newsletter.web import archive, forward, member, subscribe
from newsletter.web.common import (
    CSRF_MAX_AGE,
    App,
    Pages,
    check_csrf,
    make_csrf,
    other_language,
    redact,
    register_error_pages,
    security_headers,
)
from newsletter.web.forward import (
    FORWARDS_PER_IP_PER_DAY,
    FORWARDS_PER_TOKEN_PER_DAY,
    MAX_FRIENDS,
    NAME_MAX,
    NOTE_MAX,
    ForwardRequest,
    check_forward,
    clean_note,
    deliver_all,
    forward_intro,
    forward_messages,
    run_forward,
    unsubscribed_friends,
)
from newsletter.web.serve import run_serve

__all__ = [
    "CSRF_MAX_AGE",
    "FORWARDS_PER_IP_PER_DAY",
    "FORWARDS_PER_TOKEN_PER_DAY",
    "MAX_FRIENDS",
    "NAME_MAX",
    "NOTE_MAX",
    "ForwardRequest",
    "check_csrf",
    "check_forward",
    "clean_note",
    "create_app",
    "deliver_all",
    "forward_intro",
    "forward_messages",
    "make_csrf",
    "other_language",
    "redact",
    "run_forward",
    "run_serve",
    "unsubscribed_friends",
]


def create_app(cfg: Config, *, clock: Callable[[], float] = time.time) -> Flask:
    """The public pages as a Flask app. `clock` is for tests (token and CSRF ages, daily caps)."""
    app = App(__name__)
    app.config.update(
        FORWARDS_PER_TOKEN_PER_DAY=FORWARDS_PER_TOKEN_PER_DAY,
        FORWARDS_PER_IP_PER_DAY=FORWARDS_PER_IP_PER_DAY,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.extensions["newsletter"] = Pages(cfg, cfg.require_secret(), clock)
    app.after_request(security_headers)
    register_error_pages(app)
    for blueprint in (archive.bp, forward.bp, member.bp, subscribe.bp):
        app.register_blueprint(blueprint)
    return app
