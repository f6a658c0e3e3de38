"""Every check-then-act of the public pages holds under 50 parallel requests on the real server
(waitress, its threads, a real SQLite file, a real SMTP server on 127.0.0.1): the sign-up caps,
the confirmation's one welcome, one-click unsubscribe, the language switch. The forward caps'
twin is tests/test_web.py::test_parallel_forwards_never_pass_the_caps."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from newsletter import subscribers, web
from tests import test_web
from tests.conftest import drain_mail
from tests.test_web import SECRET, csrf_of, served, token

N = 50
cfg = test_web.cfg
clock = test_web.clock
member = test_web.member


def fire(url: str, requests: list[tuple[str, dict, dict]]) -> list[int]:
    """POST each (path, form, headers) from its own thread, all released at once by a barrier;
    the status codes."""
    start = threading.Barrier(len(requests), timeout=30)

    def post(item: tuple[str, dict, dict]) -> int:
        path, form, headers = item
        req = urllib.request.Request(
            url + path, data=urllib.parse.urlencode(form).encode(), headers=headers
        )
        start.wait()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
                return resp.status
        except urllib.error.HTTPError as err:
            err.close()
            return err.code

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(post, requests))


def rows(cfg, sql: str, params: tuple = ()) -> list[tuple]:
    db = sqlite3.connect(cfg.path("state"))
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def settled(app, smtp_server, expected: int) -> int:
    """How many emails arrived once the app's mail thread is done. A sign-up's email is queued
    only after its answer went out (call_on_close), so wait (at most 10 s) for `expected`, then
    drain, then count: more than `expected` would be a cap passed."""
    deadline = time.monotonic() + 10
    while len(smtp_server.received) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # any later put lands in the queue before the drain
    drain_mail(app)
    return len(smtp_server.received)


def sign_up(address: str, ip: str) -> tuple[str, dict, dict]:
    form = {"email": address, "name": "Luz", "lang": "es", "ui": "es", "src": "form"}
    return "/s", form, {"X-Forwarded-For": ip}


def test_parallel_sign_ups_of_one_address_mail_it_once(cfg, clock, smtp_server):
    """50 sign-ups of one address at once, from 50 networks: one confirmation email (the cap is
    one per address per 24 h), 50 identical answers."""
    app = web.create_app(cfg, clock=clock)
    with served(cfg, app) as url:
        statuses = fire(url, [sign_up("luz@example.org", f"198.51.{i}.7") for i in range(N)])
    assert statuses == [200] * N
    assert settled(app, smtp_server, 1) == len(smtp_server.to("luz@example.org")) == 1
    assert rows(cfg, "SELECT count(*) FROM signup_caps WHERE kind = 'address' AND mailed") == [(1,)]


def test_parallel_sign_ups_from_one_network_stop_at_its_cap(cfg, clock, smtp_server):
    """50 sign-ups of 50 addresses at once from one network, capped at 3 an hour: 3 emails."""
    cfg.subscribe.per_network_per_hour = 3
    app = web.create_app(cfg, clock=clock)
    with served(cfg, app) as url:
        statuses = fire(url, [sign_up(f"p{i}@example.org", "203.0.113.7") for i in range(N)])
    assert statuses == [200] * N
    assert settled(app, smtp_server, 3) == 3
    assert rows(cfg, "SELECT count(*) FROM signup_caps WHERE kind = 'network' AND mailed") == [(3,)]


def test_parallel_confirms_welcome_once(cfg, clock, smtp_server):
    """The confirmation button pressed 50 times at once: one subscriber, one welcome email."""
    app = web.create_app(cfg, clock=clock)
    signup = subscribers.SignUp("luz@example.org", "Luz", "es", "form")  # as its email's link
    with served(cfg, app) as url:
        path = f"/c/{subscribers.make_confirm_token(SECRET, signup, clock.now)}"
        statuses = fire(url, [(path, {}, {})] * N)
    assert statuses == [200] * N
    assert settled(app, smtp_server, 1) == len(smtp_server.to("luz@example.org")) == 1  # welcome
    assert rows(cfg, "SELECT count(*) FROM subscribers") == [(1,)]
    assert rows(cfg, "SELECT count(*) FROM contacts") == [(1,)]


def test_parallel_one_click_unsubscribes_make_one_suppression(cfg, clock, member, smtp_server):
    """RFC 8058 one-click POSTed 50 times at once (mail clients retry): one suppression row."""
    app = web.create_app(cfg, clock=clock)
    tok = token("unsubscribe", member, "es")
    with served(cfg, app) as url:
        statuses = fire(url, [(f"/u/{tok}", {"List-Unsubscribe": "One-Click"}, {})] * N)
    assert statuses == [200] * N
    assert rows(cfg, "SELECT key, kind FROM suppressions") == [("ana@example.org", "unsubscribed")]


def test_parallel_language_switches_make_one_change(cfg, clock, member, smtp_server):
    """The language button POSTed 50 times at once: one contact, now in English."""
    app = web.create_app(cfg, clock=clock)
    tok = token("language", member, "es")
    with served(cfg, app) as url:
        with urllib.request.urlopen(f"{url}/l/{tok}", timeout=30) as resp:
            csrf = csrf_of(resp.read().decode())
        statuses = fire(url, [(f"/l/{tok}", {"csrf": csrf}, {})] * N)
    assert statuses == [200] * N
    assert rows(cfg, "SELECT email, language_pref FROM contacts") == [("ana@example.org", "en")]
