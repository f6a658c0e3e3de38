"""The public pages through Flask's test client, with a real SQLite journal and a real SMTP server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter import links, web
from newsletter.config import load_config
from tests.conftest import ALERT_ID

SECRET = "test-secret-not-for-production-0123"
DAY = 86400


class Clock:
    """The app's clock: tests move it to expire tokens and forms and to pass a day."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def write_config(project: Path, smtp_port: int | None = None, base_url: str = "") -> Path:
    lines = [
        "[sender]",
        'from = "NALACC <alerts@nalacc.example.org>"',
        'reply_to = "NALACC <info@nalacc.example.org>"',
        'postal_address = "NALACC, 1 Example Street, Chicago, IL 60601"',
        'unsubscribe_mailto = "unsubscribe@nalacc.example.org"',
        "[web]",
        f'base_url = "{base_url or "http://127.0.0.1:8080"}"',
    ]
    if smtp_port:
        lines += ["[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"']
    path = project / "newsletter.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cfg(project, smtp_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return load_config(write_config(project, smtp_server.port))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(cfg, clock):
    return web.create_app(cfg, clock=clock).test_client()


def token(purpose: str, contact_id: int = 1, lang: str = "es", alert_id: str = ALERT_ID) -> str:
    return links.make_token(SECRET, purpose, contact_id, alert_id, lang)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "form without a csrf field"
    return m.group(1)


# --- checks that need no server -------------------------------------------------------------------


def test_check_forward_accepts_five_and_normalises():
    fwd, errors = web.check_forward(
        [" Ana@Example.ORG ", "b@example.org", "", "ana@example.org"],
        "  Rosa\r\nBcc: x@evil.example ",
        "line one\r\nline two\r",
        "en",
        ("es", "en"),
    )
    assert errors == []
    assert fwd is not None
    assert fwd.friends == ("Ana@example.org", "b@example.org")  # duplicate dropped
    assert fwd.name == "Rosa Bcc: x@evil.example"  # one line: it can never start a header
    assert fwd.note == "line one\nline two"


@pytest.mark.parametrize(
    ("to", "name", "note", "lang", "code"),
    [
        ([f"f{i}@example.org" for i in range(6)], "Rosa", "", "es", "too_many"),
        (["not-an-address"], "Rosa", "", "es", "bad_address"),
        (["a@example.org>, b@example.org"], "Rosa", "", "es", "bad_address"),
        (["a@exámple.org\r\nBcc: c@example.org"], "Rosa", "", "es", "bad_address"),
        ([], "Rosa", "", "es", "no_friend"),
        (["a@example.org"], " \r\n", "", "es", "no_name"),
        (["a@example.org"], "Rosa", "x" * 501, "es", "note_too_long"),
        (["a@example.org"], "Rosa", "", "fr", "bad_language"),
    ],
)
def test_check_forward_refuses(to, name, note, lang, code):
    fwd, errors = web.check_forward(to, name, note, lang, ("es", "en"))
    assert fwd is None
    assert code in [c for c, _ in errors]


def test_note_limit_counts_a_line_break_once():
    # A browser counts CRLF as one character for maxlength but submits two.
    note = "\r\n".join(["x" * 99] * 5)  # 499 characters as a browser counts, 503 submitted
    fwd, errors = web.check_forward(["a@example.org"], "Rosa", note, "es", ("es",))
    assert errors == [] and fwd is not None and len(fwd.note) == 499


def test_csrf_is_bound_to_the_token_and_expires():
    value = web.make_csrf(SECRET, "forward", "tok-a")
    import time

    now = time.time()
    assert web.check_csrf(SECRET, "forward", "tok-a", value, now)
    assert not web.check_csrf(SECRET, "forward", "tok-b", value, now)
    assert not web.check_csrf(SECRET, "language", "tok-a", value, now)
    assert not web.check_csrf(SECRET, "forward", "tok-a", value, now + web.CSRF_MAX_AGE + 1)
    assert not web.check_csrf(SECRET, "forward", "tok-a", value[:-2] + "xx", now)
    assert not web.check_csrf(SECRET, "forward", "tok-a", "", now)


# --- bad tokens -----------------------------------------------------------------------------------


def _bad_tokens() -> dict[str, str]:
    good = token("unsubscribe")
    return {
        "tampered": good[:-3] + ("aaa" if not good.endswith("aaa") else "bbb"),
        "foreign purpose": token("forward"),
        "malformed": "not-a-token",
        "other secret": links.make_token("another-secret-0123456789", "unsubscribe", 1, ALERT_ID, "es"),
    }


@pytest.mark.parametrize("kind", ["tampered", "foreign purpose", "malformed", "other secret"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_bad_unsubscribe_token_is_a_clear_400_in_both_languages(client, kind, method):
    url = f"/u/{_bad_tokens()[kind]}"
    resp = client.open(url, method=method, data={"List-Unsubscribe": "One-Click"})
    assert resp.status_code == 400
    body = resp.get_data(as_text=True)
    assert "Este enlace no es válido" in body and "This link is not valid" in body
    assert 'lang="es"' in body and 'lang="en"' in body
