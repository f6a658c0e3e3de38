"""The public pages through Flask's test client, with a real SQLite journal and a real SMTP server."""

from __future__ import annotations

import contextlib
import email
import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from newsletter import links, web
from newsletter.config import load_config
from newsletter.contacts import Contacts
from newsletter.suppressions import Suppressions
from tests.conftest import ALERT_ID, make_plan

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


def public_id(contact_id: int) -> str:
    """The public id links carry for a contact of the state file in the working directory.

    A contact id the file does not have gets a made-up public id (a link to nobody here)."""
    from newsletter.journal import Journal

    if not Path("newsletter.db").exists():
        return f"{contact_id:032x}"
    with Journal("newsletter.db") as j:
        try:
            return Contacts(j).public_id(contact_id)
        except KeyError:
            return f"{contact_id:032x}"


def token(purpose: str, contact_id: int = 1, lang: str = "es", alert_id: str = ALERT_ID) -> str:
    """A member's link token, as a send makes it (the tests name members by contact id)."""
    return links.make_token(SECRET, purpose, public_id(contact_id), alert_id, lang)


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
        "other secret": links.make_token(
            "another-secret-0123456789", "unsubscribe", 1, ALERT_ID, "es"
        ),
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


# --- language and unsubscribe, against the real journal --------------------------------------------


@pytest.fixture
def member(cfg) -> int:
    """A contact in the state file, as `send` leaves one: Ana, Spanish edition."""
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        return Contacts(j).add("ana@example.org", "Ana Pérez")


def state(cfg) -> tuple:
    """Everything the pages may change: contacts' languages, suppressions, forward counts."""
    import sqlite3

    db = sqlite3.connect(cfg.path("state"))
    try:
        return (
            db.execute(
                "SELECT id, email, name, language_pref FROM contacts ORDER BY id"
            ).fetchall(),
            db.execute("SELECT key, reason FROM suppressions ORDER BY key").fetchall(),
            db.execute("SELECT contact_id, alert_id, count FROM forwards ORDER BY id").fetchall(),
        )
    finally:
        db.close()


def language_pref(cfg, contact_id: int) -> str | None:
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        contact = Contacts(j).get(contact_id)
        assert contact is not None
        return contact.language_pref


def suppressed(cfg, address: str) -> bool:
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        return Suppressions(j).has(address)


def test_language_get_changes_nothing_post_records_it(client, cfg, member):
    tok = token("language", member, "es")
    before = state(cfg)
    resp = client.get(f"/l/{tok}")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert '<html lang="en">' in body  # the page speaks the language offered
    assert "Yes, send them in English" in body
    assert client.head(f"/l/{tok}").status_code == 200
    assert state(cfg) == before

    resp = client.post(f"/l/{tok}", data={"csrf": csrf_of(body)})
    assert resp.status_code == 200
    assert "we will write to you in English" in resp.get_data(as_text=True)
    assert language_pref(cfg, member) == "en"

    # And back, from an English edition's link: the page is in Spanish.
    tok_en = token("language", member, "en")
    page = client.get(f"/l/{tok_en}").get_data(as_text=True)
    assert '<html lang="es">' in page and "Reciba nuestros correos en español" in page
    client.post(f"/l/{tok_en}", data={"csrf": csrf_of(page)})
    assert language_pref(cfg, member) == "es"


def test_language_post_without_csrf_is_refused(client, cfg, member):
    tok = token("language", member, "es")
    before = state(cfg)
    for data in ({}, {"csrf": "forged"}, {"csrf": web.make_csrf(SECRET, "language", "other")}):
        resp = client.post(f"/l/{tok}", data=data)
        assert resp.status_code == 400
        assert "This form has expired" in resp.get_data(as_text=True)
    assert state(cfg) == before


def test_language_for_an_unknown_contact_changes_nothing(client, cfg, member):
    tok = token("language", member + 99, "es")
    resp = client.get(f"/l/{tok}")
    assert resp.status_code == 404
    assert "could not find your subscription" in resp.get_data(as_text=True)
    before = state(cfg)
    resp = client.post(f"/l/{tok}", data={"csrf": web.make_csrf(SECRET, "language", tok)})
    assert resp.status_code == 404
    assert "could not find your subscription" in resp.get_data(as_text=True)
    assert state(cfg) == before


def test_unsubscribe_page_confirms_and_offers_language(client, cfg, member):
    tok = token("unsubscribe", member, "es")
    before = state(cfg)
    resp = client.get(f"/u/{tok}")
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "¿Cancelar su suscripción a nuestras alertas?" in body
    assert "Get our emails in English" in body  # the offer, in the other language
    assert state(cfg) == before
    # The offered language link is a working language token for the same contact.
    lang_url = re.search(r'href="(/l/[^"]+)"', body).group(1)
    assert links.read_token(SECRET, "language", lang_url[3:]).person == public_id(member)

    resp = client.post(f"/u/{tok}", data={"confirm": "1"})
    assert resp.status_code == 200
    assert "Su suscripción está cancelada" in resp.get_data(as_text=True)
    assert suppressed(cfg, "ANA@example.org")

    # Resubscribe from the confirmation page.
    page = resp.get_data(as_text=True)
    action = re.search(r'action="(/u/[^"]+/resubscribe)"', page).group(1)
    assert client.post(action, data={}).status_code == 400  # no CSRF: refused
    assert suppressed(cfg, "ana@example.org")
    resp = client.post(action, data={"csrf": csrf_of(page)})
    assert resp.status_code == 200 and "Volverá a recibir" in resp.get_data(as_text=True)
    assert not suppressed(cfg, "ana@example.org")


def test_one_click_post_unsubscribes(client, cfg, member):
    tok = token("unsubscribe", member, "en")
    resp = client.post(
        f"/u/{tok}",
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 200
    assert suppressed(cfg, "ana@example.org")
    # RFC 8058 also allows multipart/form-data; a second one-click is harmless.
    resp = client.post(
        f"/u/{tok}", data={"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data"
    )
    assert resp.status_code == 200


def test_after_one_click_the_link_offers_to_resubscribe(client, cfg, member):
    """The mail client's button shows no page: the email's link, opened later, lets them back in."""
    tok = token("unsubscribe", member, "es")
    client.post(f"/u/{tok}", data={"List-Unsubscribe": "One-Click"})
    assert suppressed(cfg, "ana@example.org")
    before = state(cfg)
    resp = client.get(f"/u/{tok}")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Su suscripción está cancelada" in page
    assert state(cfg) == before  # a GET changes nothing
    action = re.search(r'action="(/u/[^"]+/resubscribe)"', page).group(1)
    resp = client.post(action, data={"csrf": csrf_of(page)})
    assert resp.status_code == 200 and "Volverá a recibir" in resp.get_data(as_text=True)
    assert not suppressed(cfg, "ana@example.org")
    assert "¿Cancelar su suscripción" in client.get(f"/u/{tok}").get_data(as_text=True)  # subscribed again


def test_unsubscribe_post_without_the_field_changes_nothing(client, cfg, member):
    tok = token("unsubscribe", member, "es")
    before = state(cfg)
    assert client.post(f"/u/{tok}", data={}).status_code == 400
    assert client.post(f"/u/{tok}", data={"List-Unsubscribe": "yes"}).status_code == 400
    assert state(cfg) == before


@pytest.mark.parametrize("purpose", ["forward", "language", "unsubscribe"])
def test_bad_tokens_on_every_page_change_nothing(client, cfg, member, smtp_server, purpose):
    """Tampered, foreign-purpose, other-secret and malformed tokens, each with a full valid form."""
    good = token(purpose, member)
    page = client.get(f"/{purpose[0]}/{good}").get_data(as_text=True)
    form = {"List-Unsubscribe": "One-Click", "confirm": "1", "to": FRIENDS, "name": "Ana"}
    if 'name="csrf"' in page:
        form["csrf"] = csrf_of(page)
    other = "language" if purpose != "language" else "forward"
    bad = [
        good[:-3] + ("aaa" if not good.endswith("aaa") else "bbb"),
        good.replace(".", "x", 1),
        token(other, member),
        links.make_token("another-secret-0123456789", purpose, member, ALERT_ID, "es"),
        "not-a-token",
    ]
    before = state(cfg)
    for tok in bad:
        for method in ("GET", "POST"):
            resp = client.open(f"/{purpose[0]}/{tok}", method=method, data=form)
            body = resp.get_data(as_text=True)
            assert resp.status_code == 400, (tok, method)
            assert "Este enlace no es válido" in body and "This link is not valid" in body
    resp = client.post(f"/u/{bad[0]}/resubscribe", data={"csrf": form.get("csrf", "")})
    assert resp.status_code == 400
    assert state(cfg) == before and smtp_server.received == []


def test_expired_tokens_are_refused_and_change_nothing(client, cfg, member, clock):
    toks = {p: token(p, member) for p in ("forward", "language", "unsubscribe")}
    before = state(cfg)
    for purpose, tok in toks.items():
        clock.now += links.MAX_AGE[purpose] + 60
        url = f"/{purpose[0]}/{tok}"
        for method in ("GET", "POST"):
            resp = client.open(
                url, method=method, data={"List-Unsubscribe": "One-Click", "confirm": "1"}
            )
            assert resp.status_code == 400, (purpose, method)
            body = resp.get_data(as_text=True)
            assert "Este enlace caducó" in body and "This link has expired" in body
        clock.now -= links.MAX_AGE[purpose] + 60
    assert state(cfg) == before
    # Still valid just before the limit.
    clock.now += links.MAX_AGE["unsubscribe"] - 60
    assert client.get(f"/u/{toks['unsubscribe']}").status_code == 200


def test_security_headers(client, member):
    resp = client.get(f"/u/{token('unsubscribe', member)}")
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "no-store"
    assert SECRET not in resp.get_data(as_text=True)


# --- forward to a friend --------------------------------------------------------------------------

FRIENDS = ["luis@example.org", "marta@example.net"]


def forward_page(client, tok: str) -> str:
    resp = client.get(f"/f/{tok}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def post_forward(client, tok: str, page: str, **fields):
    data = {"csrf": csrf_of(page), "to": FRIENDS, "name": "Ana Pérez", "note": "", "lang": "es"}
    data.update(fields)
    return client.post(f"/f/{tok}", data=data)


def test_forward_form_in_the_members_language(client, cfg, member):
    before = state(cfg)
    page = forward_page(client, token("forward", member, "en"))
    assert '<html lang="en">' in page
    assert len(re.findall(r'<input type="email" id="to(\d)" name="to"', page)) == web.MAX_FRIENDS
    for i in range(1, web.MAX_FRIENDS + 1):
        assert f'<label for="to{i}">' in page
    assert 'id="name" name="name" value="Ana Pérez"' in page  # prefilled from the contact
    assert f'<textarea id="note" name="note" maxlength="{web.NOTE_MAX}"' in page
    assert state(cfg) == before
    es = forward_page(client, token("forward", member, "es"))
    assert '<html lang="es">' in es and "Reenvíe esta alerta" in es


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"to": [f"f{i}@example.org" for i in range(6)]}, 400, "at most 5 friends"),
        ({"note": "x" * 501}, 400, "at most 500 characters"),
        ({"to": ["luis@example.org", "<b>not</b>an-address"]}, 400, "is not a valid email"),
        ({"to": ["luis@example.org\r\nBcc: spam@example.com"]}, 400, "is not a valid email"),
        ({"name": ""}, 400, "Write your name"),
        ({"csrf": ""}, 400, "This form has expired"),
        ({"csrf": "forged.value.x"}, 400, "This form has expired"),
    ],
)
def test_forward_refusals_reshow_the_form_and_send_nothing(
    client, cfg, member, smtp_server, fields, status, message
):
    tok = token("forward", member, "en")
    page = forward_page(client, tok)
    before = state(cfg)
    resp = post_forward(client, tok, page, **fields)
    body = resp.get_data(as_text=True)
    assert resp.status_code == status
    assert message in body
    assert "Nothing was sent yet." in body
    assert '<form method="post"' in body  # the form again, with what was typed
    assert "<b>not</b>" not in body  # what was typed comes back escaped
    assert smtp_server.received == []
    assert state(cfg) == before


def test_forward_csrf_from_another_token_or_too_old_is_refused(
    client, cfg, member, clock, smtp_server
):
    tok = token("forward", member, "es")
    other_page = forward_page(client, token("forward", member, "en"))
    assert post_forward(client, tok, other_page).status_code == 400
    page = forward_page(client, tok)
    clock.now += web.CSRF_MAX_AGE + 60
    resp = post_forward(client, tok, page)
    assert resp.status_code == 400 and "Este formulario caducó" in resp.get_data(as_text=True)
    assert smtp_server.received == []


def test_forward_sends_the_forward_safe_copy(client, cfg, member, smtp_server):
    tok = token("forward", member, "es")
    note = 'Mira esto <script>alert("x")</script> & firma\r\nBcc: victim@example.com\r\nbye'
    resp = post_forward(client, tok, forward_page(client, tok), note=note, lang="en")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "Enviamos la alerta a 2 personas." in resp.get_data(as_text=True)
    got = smtp_server.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in got) == FRIENDS
    for r in got:
        msg = r.message
        assert msg["To"] == r.rcpt_tos[0]
        assert msg["Reply-To"] == "ana@example.org"  # answers reach the member
        assert "nalacc.example.org" in msg["From"]
        assert msg["Bcc"] is None and "victim" not in str(msg.items())
        assert msg["List-Unsubscribe"] is None
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert "Mira esto &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; firma" in html
        assert "<script>" not in html
        assert 'Mira esto <script>alert("x")</script> & firma\nBcc: victim@example.com\nbye' in text
        assert "Ana Pérez forwarded you this alert" in text
        assert "Ana Pérez forwarded you this alert" in html
        for part in (html, text):
            assert "/u/" not in part and "/l/" not in part and "/f/" not in part
            assert "__NL_" not in part
        assert '<html lang="en"' in html
    # Only a count is kept: no friend's address anywhere in the state file.
    assert state(cfg)[2] == [(member, ALERT_ID, 2)]
    raw = Path(cfg.path("state")).read_bytes()
    for wal in Path(cfg.path("state")).parent.glob("*.db-wal"):
        raw += wal.read_bytes()
    assert b"luis@example.org" not in raw and b"marta@example.net" not in raw


def test_forward_caps_per_token_and_per_ip(cfg, clock, member, smtp_server):
    app = web.create_app(cfg, clock=clock)
    app.config.update(FORWARDS_PER_TOKEN_PER_DAY=3, FORWARDS_PER_IP_PER_DAY=4)
    client = app.test_client()
    tok = token("forward", member, "es")
    assert post_forward(client, tok, forward_page(client, tok)).status_code == 200
    before = state(cfg)
    resp = post_forward(client, tok, forward_page(client, tok))  # 2 + 2 > 3
    assert resp.status_code == 429
    assert "Llegó al límite de hoy: 3 personas" in resp.get_data(as_text=True)
    assert state(cfg) == before and len(smtp_server.received) == 2
    # Another member from the same address: the IP cap (2 + 2 + 1 > 4).
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        other = Contacts(j).add("beto@example.org", "Beto")
    tok2 = token("forward", other, "en")
    assert post_forward(client, tok2, forward_page(client, tok2)).status_code == 200  # IP: 4
    resp = post_forward(client, tok2, forward_page(client, tok2), to=["x@example.org"])
    assert resp.status_code == 429 and "from this connection today" in resp.get_data(as_text=True)
    assert len(smtp_server.received) == 4
    # A day later the member may forward again.
    clock.now += DAY + 60
    assert post_forward(client, tok, forward_page(client, tok)).status_code == 200
    assert len(smtp_server.wait_for(6)) == 6


def test_forward_when_the_server_refuses(client, cfg, member, smtp_server):
    smtp_server.on_rcpt = lambda address: "550 5.1.1 no such user"
    tok = token("forward", member, "es")
    before = state(cfg)
    resp = post_forward(client, tok, forward_page(client, tok))
    assert resp.status_code == 503
    assert "No pudimos enviar la alerta" in resp.get_data(as_text=True)
    assert state(cfg) == before  # nothing sent, nothing counted


# --- archive --------------------------------------------------------------------------------------


def mark_sent(cfg, alert_id: str = ALERT_ID) -> None:
    """The journal as after a send that reached one member (the index lists sent alerts only)."""
    from newsletter.journal import Journal, timestamp
    from newsletter.recipients import Recipient

    ana = Recipient("ana@example.org", "ana@example.org", "Ana", "es", {}, 2)
    with Journal(cfg.path("state")) as j:
        make_plan(j, alert_id, [ana])
        t = timestamp()
        j.apply_flight([(alert_id, ana.key, "sent", 1, "<m1@example.org>", "es", "250", t, t)])


def test_archive_and_index(client, cfg, clock):
    # Before any send the index lists nothing (a planned send that was not confirmed neither).
    from newsletter.journal import Journal
    from newsletter.recipients import Recipient

    with Journal(cfg.path("state")) as j:
        make_plan(j, ALERT_ID, [Recipient("b@example.org", "b@example.org", "", "es", {}, 2)])
    assert f"/a/{ALERT_ID}/" not in client.get("/").get_data(as_text=True)
    mark_sent(cfg)
    clock.now += web.archive.RECHECK  # the index looks again at most this often
    index = client.get("/").get_data(as_text=True)
    assert f'href="/a/{ALERT_ID}/es"' in index and f'href="/a/{ALERT_ID}/en"' in index
    for lang in ("es", "en"):
        resp = client.get(f"/a/{ALERT_ID}/{lang}")
        assert resp.status_code == 200
        html = resp.get_data(as_text=True)
        assert f'lang="{lang}"' in html
        assert "/u/" not in html and "/l/" not in html and "/f/" not in html
        assert "__NL_" not in html
    assert client.get(f"/a/{ALERT_ID}/fr").status_code == 404
    assert client.get("/a/no-such-alert/es").status_code == 404
    assert client.get("/a/..%2F..%2Fetc/es").status_code == 404


def test_index_in_both_languages(client, cfg):
    mark_sent(cfg)
    es = client.get("/").get_data(as_text=True)
    assert '<html lang="es">' in es and "<h1>Alertas de acción</h1>" in es
    assert '<a href="/?lang=en" lang="en" hreflang="en">English</a>' in es
    en = client.get("/?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in en and "<h1>Action alerts</h1>" in en
    assert '<a href="/?lang=es" lang="es" hreflang="es">español</a>' in en
    assert f'href="/a/{ALERT_ID}/en"' in en
    assert client.get("/?lang=fr").get_data(as_text=True) == es  # unknown: the default


def test_a_draft_is_not_published(client, cfg, project):
    """Next week's alert, started with `newsletter new` while serve runs, stays private."""
    from click.testing import CliRunner

    from newsletter.cli import cli

    draft = "2011-08-19-next-week"
    assert CliRunner().invoke(cli, ["new", draft]).exit_code == 0
    assert "[[WRITE:" in (project / "alerts" / draft / "es.md").read_text(encoding="utf-8")
    mark_sent(cfg, draft)  # even sent by mistake: never shown with its blanks
    assert draft not in client.get("/").get_data(as_text=True)
    for lang in ("es", "en"):
        resp = client.get(f"/a/{draft}/{lang}")
        assert resp.status_code == 404 and "WRITE" not in resp.get_data(as_text=True)


def test_an_alert_that_never_went_out_is_not_served(client, cfg, clock):
    """An embargoed alert (planned, never sent; ids are guessable dates) is a 404 exactly like an
    alert that does not exist, as a page and as its events' .ics (issue 8, item 4)."""
    from newsletter.journal import Journal
    from newsletter.recipients import Recipient

    with Journal(cfg.path("state")) as j:  # a send planned but not confirmed
        make_plan(j, ALERT_ID, [Recipient("b@example.org", "b@example.org", "", "es", {}, 2)])
    nowhere = "2011-08-13-no-such-alert"
    for lang in ("es", "en", "fr"):
        unsent, missing = client.get(f"/a/{ALERT_ID}/{lang}"), client.get(f"/a/{nowhere}/{lang}")
        assert unsent.status_code == missing.status_code == 404
        assert unsent.get_data() == missing.get_data()
    unsent = client.get(f"/a/{ALERT_ID}/chicago-protest.ics")
    missing = client.get(f"/a/{nowhere}/chicago-protest.ics")
    assert unsent.status_code == missing.status_code == 404
    assert unsent.get_data() == missing.get_data()
    assert "BEGIN:VCALENDAR" not in unsent.get_data(as_text=True)
    mark_sent(cfg)  # once it went out, it is public (seen within RECHECK)
    clock.now += web.archive.RECHECK
    assert client.get(f"/a/{ALERT_ID}/es").status_code == 200
    assert client.get(f"/a/{ALERT_ID}/chicago-protest.ics").status_code == 200


def test_archive_is_cached(client, cfg, monkeypatch):
    from newsletter import render

    mark_sent(cfg)
    client.get(f"/a/{ALERT_ID}/es")
    calls = []
    real = render.render_edition
    monkeypatch.setattr(render, "render_edition", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(3):
        assert client.get(f"/a/{ALERT_ID}/es").status_code == 200
    assert calls == []
    # An edit to the alert is picked up.
    md = cfg.path("alerts") / ALERT_ID / "es.md"
    import os

    st = md.stat()
    os.utime(md, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert client.get(f"/a/{ALERT_ID}/es").status_code == 200
    assert len(calls) == 1


# --- newsletter forward (the command) -------------------------------------------------------------


def test_forward_command_sends_the_same_copy(cfg, smtp_server, project):
    from click.testing import CliRunner

    from newsletter.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "forward",
            f"alerts/{ALERT_ID}",
            "--to",
            "luis@example.org",
            "--to",
            "marta@example.net",
            "--from-name",
            "Rosa",
            "--note",
            "Line one\nline <two>",
            "--lang",
            "en",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"to 2 of 2 friends via SMTP 127.0.0.1:{smtp_server.port}" in result.output
    got = smtp_server.wait_for(2)
    assert len(got) == 2
    msg = got[0].message
    assert "Rosa forwarded you this alert" in msg.get_body(("plain",)).get_content()
    assert "line &lt;two&gt;" in msg.get_body(("html",)).get_content()
    assert msg["Reply-To"] == "NALACC <info@nalacc.example.org>"
    assert msg["List-Unsubscribe"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "a@example.org"] * 6, "at most 5 friends"),
        (["--to", "not-an-address"], "is not a valid email address"),
        (["--to", "a@example.org", "--note", "x" * 501], "longer than 500"),
    ],
)
def test_forward_command_refuses_cleanly(cfg, smtp_server, project, args, message):
    from click.testing import CliRunner

    from newsletter.cli import cli

    result = CliRunner().invoke(
        cli, ["forward", f"alerts/{ALERT_ID}", "--from-name", "Rosa", *args]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert smtp_server.received == []


def test_forward_command_without_smtp_writes_the_outbox(project, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    write_config(project)
    result = CliRunner().invoke(
        cli, ["forward", f"alerts/{ALERT_ID}", "--to", "luis@example.org", "--from-name", "Rosa"]
    )
    assert result.exit_code == 0, result.output
    assert "via the outbox" in result.output
    files = list((project / "outbox" / ALERT_ID / "forwards").glob("*.eml"))
    assert len(files) == 1
    msg = email.message_from_bytes(files[0].read_bytes())
    assert msg["To"] == "luis@example.org"


def test_ip_cap_behind_a_local_reverse_proxy(cfg, clock, smtp_server):
    """Through nginx on this machine each client has its own cap; a forged header gains nothing."""
    from newsletter.journal import Journal

    app = web.create_app(cfg, clock=clock)
    app.config.update(FORWARDS_PER_IP_PER_DAY=2)
    client = app.test_client()  # its peer address is 127.0.0.1, like a local proxy's
    with Journal(cfg.path("state")) as j:
        ids = [Contacts(j).add(f"m{i}@example.org", f"M{i}") for i in range(3)]

    def post(contact_id: int, forwarded: str):
        tok = token("forward", contact_id, "en")
        page = client.get(f"/f/{tok}").get_data(as_text=True)
        return client.post(
            f"/f/{tok}",
            data={"csrf": csrf_of(page), "to": FRIENDS, "name": "M", "lang": "en"},
            headers={"X-Forwarded-For": forwarded},
        )

    assert post(ids[0], "203.0.113.5").status_code == 200
    assert post(ids[1], "203.0.113.6").status_code == 200  # another client: its own cap
    # The same client again, prepending a made-up address: the proxy's entry is the last one.
    assert post(ids[2], "198.51.100.1, 203.0.113.5").status_code == 429
    assert len(smtp_server.received) == 4


def test_calendar_file(client, cfg):
    mark_sent(cfg)
    resp = client.get(f"/a/{ALERT_ID}/chicago-protest.ics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/calendar"
    body = resp.get_data(as_text=True)
    assert body.startswith("BEGIN:VCALENDAR") and "DTSTART:20110816T160000Z" in body
    assert client.get(f"/a/{ALERT_ID}/no-such-event.ics").status_code == 404


def test_serve_needs_the_secret(project):
    from click.testing import CliRunner

    from newsletter.cli import cli

    write_config(project)
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 1
    assert "NEWSLETTER_SECRET is not set" in result.output
    assert "Traceback" not in result.output


def test_serve_without_base_url_only_on_loopback(project, monkeypatch):
    from click.testing import CliRunner

    from newsletter.cli import cli

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (project / "newsletter.toml").write_text("[org]\nname = 'NALACC'\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1 and "[web] base_url is not set" in result.output


def start_serve(project, monkeypatch, *args: str):
    """`newsletter serve` as a user starts it (a real process on 127.0.0.1), once it listens:
    the process, its port, the headers and text of its first answer (GET /), and what it
    printed up to its start line (its output after that is left to read).

    `--port 0` and the port read from the start line: a port picked beforehand could be taken
    by another process meanwhile, and polling it could then get someone else's answer."""
    import os
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import read_until

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    write_config(project)
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        first = read_until(proc, r"Serving the public pages on http://127\.0\.0\.1:\d+/")
        port = int(re.findall(r"on http://127\.0\.0\.1:(\d+)/", first)[0])
        # The start line comes once the socket listens: this first request is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
            assert resp.status == 200
            return proc, port, resp.headers, resp.read().decode(), first
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise


def test_newsletter_serve_answers(project, monkeypatch):
    """`newsletter serve` as a user starts it: a real process, asked over HTTP, then stopped."""
    import urllib.request

    proc, port, _headers, page, first = start_serve(project, monkeypatch)
    try:
        assert "Alertas de acción" in page
        from newsletter.journal import Journal

        with Journal(project / "newsletter.db") as j:
            tok = token("unsubscribe", Contacts(j).add("ana@example.org", "Ana"))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/u/{tok}", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        out = first + proc.communicate(timeout=10)[0].decode()
    assert f"http://127.0.0.1:{port}/" in out
    # No [smtp] host: the forward page says "sent", so the console says where the copies go.
    assert "warning: " in out and "[smtp] host is not set" in out and "outbox" in out
    assert '"GET /u/… HTTP/1.1" 200' in out  # logged, without the member's token
    assert tok not in out and tok.split(".")[0] not in out
    assert SECRET not in out


def test_forward_partly_refused_says_who_was_missed(client, cfg, member, smtp_server):
    smtp_server.on_rcpt = lambda address: "550 5.1.1 no such user" if "marta" in address else None
    tok = token("forward", member, "en")
    resp = post_forward(client, tok, forward_page(client, tok))
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "We sent the alert to 1 friend." in body
    assert "did not accept these addresses" in body and "marta@example.net" in body
    assert state(cfg)[2] == [(member, ALERT_ID, 1)]  # only what was delivered counts


@pytest.mark.parametrize("lang", ["es", "en"])
def test_every_page_string_is_translated(cfg, lang):
    from newsletter import i18n

    assert i18n.missing_translations(cfg, lang, "web") == []
    catalog = i18n.catalog(cfg, lang, "web")
    for msgid in (  # used from Python, not from a template
        "%(name)s forwarded you this alert",
        "Would you rather read us in %(language)s?",
        "Get our emails in %(language)s",
    ):
        assert catalog.get(msgid) is not None and catalog.get(msgid).string, msgid
    assert web.forward_intro(cfg, "es", "Ana") == "Ana le reenvió esta alerta"


def test_pages_link_under_the_base_url_path(project, smtp_server, monkeypatch):
    """Served under https://host/nalacc/ (the proxy strips the prefix): forms post back there."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = load_config(write_config(project, smtp_server.port, "https://alerts.example.org/nalacc"))
    client = web.create_app(cfg).test_client()
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        tok = token("unsubscribe", Contacts(j).add("ana@example.org"), "es")
    page = client.get(f"/u/{tok}").get_data(as_text=True)
    assert f'action="/nalacc/u/{tok}"' in page
    assert 'href="/nalacc/l/' in page
    mark_sent(cfg)
    assert f'href="/nalacc/a/{ALERT_ID}/es"' in client.get("/").get_data(as_text=True)


# --- friends who unsubscribed ----------------------------------------------------------------------


def test_forward_answers_the_same_whoever_the_friend_is(client, cfg, member, smtp_server):
    """A forward is the organisation's mail (CAN-SPAM): an opted-out friend gets no copy, and the
    forwarder cannot tell: same status, same page, and the friend counts against the caps."""
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        Suppressions(j).add("Marta@Example.net", "unsubscribe page")
    tok = token("forward", member, "es")

    def answer(to: list[str]) -> tuple[int, str]:
        resp = post_forward(client, tok, forward_page(client, tok), to=to, note="hola")
        return resp.status_code, resp.get_data(as_text=True)

    # Marta unsubscribed; Nora was never on the list. One of two friends, then alone.
    assert answer(["luis@example.org", "marta@example.net"]) == answer(
        ["luis@example.org", "nora@example.net"]
    )
    assert answer(["marta@example.net"]) == answer(["nora@example.net"])
    status, page = answer(["marta@example.net"])
    assert status == 200 and "Enviamos la alerta a 1 persona." in page
    assert "marta" not in page and "baja" not in page.lower()
    got = smtp_server.wait_for(4)
    time.sleep(0.2)  # nothing more arrives for Marta
    assert sorted(r.rcpt_tos[0] for r in smtp_server.received) == [
        "luis@example.org",
        "luis@example.org",
        "nora@example.net",
        "nora@example.net",
    ], got
    # Every friend counted, Marta too.
    assert [row[2] for row in state(cfg)[2]] == [2, 2, 1, 1, 1]


def test_a_friend_who_unsubscribed_counts_against_the_caps(cfg, clock, member, smtp_server):
    from newsletter.journal import Journal

    app = web.create_app(cfg, clock=clock)
    app.config.update(FORWARDS_PER_TOKEN_PER_DAY=3)
    client = app.test_client()
    with Journal(cfg.path("state")) as j:
        Suppressions(j).add("marta@example.net", "unsubscribe page")
    tok = token("forward", member, "es")
    assert post_forward(client, tok, forward_page(client, tok)).status_code == 200  # 2 of 3
    # Testing addresses is not free: Marta's copy counted, so one more is the limit.
    resp = post_forward(client, tok, forward_page(client, tok), to=["x@example.org", "y@example.org"])
    assert resp.status_code == 429
    assert len(smtp_server.wait_for(1)) == 1


def test_forward_command_skips_a_friend_who_unsubscribed(cfg, smtp_server, project):
    from click.testing import CliRunner

    from newsletter.cli import cli
    from newsletter.journal import Journal

    with Journal(cfg.path("state")) as j:
        Suppressions(j).add("luis@example.org", "by hand")
    args = ["forward", f"alerts/{ALERT_ID}", "--from-name", "Rosa"]
    result = CliRunner().invoke(cli, [*args, "--to", "luis@example.org", "--to", "m@example.net"])
    assert result.exit_code == 0, result.output
    assert "Skipped (unsubscribed from the list): luis@example.org" in result.output
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [["m@example.net"]]
    result = CliRunner().invoke(cli, [*args, "--to", "LUIS@example.org"])
    assert result.exit_code == 0, result.output
    assert "Nothing forwarded: every address given has unsubscribed" in result.output
    assert len(smtp_server.received) == 1


# --- links name the person, not a row number (issue 8, item 2) -------------------------------------


def replace_state_file(cfg, monkeypatch, *people: str) -> list[int]:
    """The state file moved away and a new one made (a send from a fresh setup), an hour later."""
    from newsletter import journal
    from newsletter.journal import Journal

    state_path = Path(cfg.path("state"))
    for p in state_path.parent.glob(state_path.name + "*"):
        p.rename(p.with_name("old-" + p.name))
    later = journal.now() + timedelta(hours=1)
    monkeypatch.setattr(journal, "now", lambda: later)  # the clock only
    with Journal(state_path) as j:
        return [Contacts(j).add(address, address.split("@")[0].title()) for address in people]


@pytest.mark.parametrize("old_format", [False, True], ids=["public-id", "row-number"])
def test_a_link_from_a_replaced_state_file_reaches_nobody(
    client, cfg, member, smtp_server, monkeypatch, old_format
):
    """Ana's links, after the state file was replaced and her row number went to Beto."""
    person = member if old_format else public_id(member)
    toks = {p: links.make_token(SECRET, p, person, ALERT_ID, "es") for p in links.PURPOSES}
    forward_form = forward_page(client, toks["forward"])  # Ana's form, before the switch
    unsub_page = client.get(f"/u/{toks['unsubscribe']}").get_data(as_text=True)
    assert "Ana Pérez" in forward_form and "Cancelar su suscripción" in unsub_page
    assert replace_state_file(cfg, monkeypatch, "beto@example.org") == [member]  # same row
    before = state(cfg)
    for url, method, data in (
        (f"/f/{toks['forward']}", "GET", {}),
        (f"/f/{toks['forward']}", "POST", {"csrf": csrf_of(forward_form), "to": FRIENDS,
                                          "name": "Ana", "lang": "es"}),
        (f"/u/{toks['unsubscribe']}", "GET", {}),
        (f"/u/{toks['unsubscribe']}", "POST", {"List-Unsubscribe": "One-Click"}),
        (f"/u/{toks['unsubscribe']}", "POST", {"confirm": "1"}),
        (f"/l/{toks['language']}", "GET", {}),
    ):
        resp = client.open(url, method=method, data=data)
        body = resp.get_data(as_text=True)
        assert resp.status_code == 404, (url, method, body)
        assert "No encontramos su suscripción" in body or "could not find" in body
        assert "Beto" not in body and "beto@" not in body
    assert state(cfg) == before  # Beto still subscribed, no forward counted
    assert smtp_server.received == []  # nothing delivered


def test_old_state_file_gets_public_ids_and_its_old_links_still_work(project, cfg, client):
    """A state file of schema 1 (links carried row numbers) is upgraded in place: every contact
    gets a public id, data is kept, and an unsubscribe link in an email sent before the upgrade
    still unsubscribes its member (and only them)."""
    import sqlite3

    from newsletter import journal
    from newsletter.journal import Journal

    path = Path(cfg.path("state"))
    db = sqlite3.connect(path)
    db.executescript(journal._SCHEMA)
    db.execute("INSERT INTO meta VALUES ('ip_salt', 'x')")
    for i, who in enumerate(("ana", "beto", "carla"), 1):
        db.execute(
            "INSERT INTO contacts (id, key, email, name, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')",
            (i, f"{who}@example.org", f"{who}@example.org", who.title()),
        )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    old_link = links.make_token(SECRET, "unsubscribe", 2, ALERT_ID, "es")  # Beto's, row 2
    with Journal(path) as j:
        contacts = [Contacts(j).get(i) for i in (1, 2, 3)]
    assert [c.name for c in contacts] == ["Ana", "Beto", "Carla"]
    ids = [c.public_id for c in contacts]
    assert len(set(ids)) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] >= 2
    resp = client.post(f"/u/{old_link}", data={"List-Unsubscribe": "One-Click"})
    assert resp.status_code == 200
    assert state(cfg)[1] == [("beto@example.org", "one-click")]


def test_a_new_state_file_never_hands_out_an_old_public_id(cfg, member, monkeypatch):
    old = public_id(member)
    replace_state_file(cfg, monkeypatch, "ana@example.org")  # the same person, a new file
    assert public_id(member) != old


def test_links_dated_in_the_future_are_refused(client, cfg, member, clock):
    """Beyond a few minutes of clock skew a link signed 'later' is not honoured (issue 8, 11)."""
    toks = {p: token(p, member) for p in links.PURPOSES}
    clock.now -= 3600  # the server's clock an hour behind the link's date: only the clock moves
    before = state(cfg)
    for url in (f"/f/{toks['forward']}", f"/l/{toks['language']}", f"/u/{toks['unsubscribe']}"):
        for method in ("GET", "POST"):
            resp = client.open(url, method=method, data={"List-Unsubscribe": "One-Click"})
            assert resp.status_code == 400, (url, method)
            assert "This link is not valid" in resp.get_data(as_text=True)
    assert state(cfg) == before
    clock.now += 3600 - 120  # two minutes of skew: fine
    assert client.get(f"/u/{toks['unsubscribe']}").status_code == 200


# --- forward caps hold under parallel submissions (issue 8, item 1) --------------------------------


@contextlib.contextmanager
def served(cfg, app):
    """The app on the server `newsletter serve` uses (waitress, its pool of threads), on
    127.0.0.1 at a port of its own, for the test."""
    from newsletter.web import serve

    server = serve.make_server(cfg, "127.0.0.1", 0, app=app)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        serve.stop(server)
        thread.join(timeout=10)


def fire(url: str, posts: list[tuple[str, list[str]]]) -> list[int]:
    """POST each (token, friends) forward form at once from its own thread; the status codes."""
    import urllib.error
    import urllib.parse
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    csrf = {}
    for tok, _ in posts:
        if tok not in csrf:
            with urllib.request.urlopen(f"{url}/f/{tok}", timeout=30) as resp:
                csrf[tok] = csrf_of(resp.read().decode())
    start = threading.Barrier(len(posts), timeout=30)

    def post(item: tuple[str, list[str]]) -> int:
        tok, friends = item
        body = urllib.parse.urlencode(
            {"csrf": csrf[tok], "to": friends, "name": "Ana", "lang": "es"}, doseq=True
        ).encode()
        start.wait()  # every request leaves together
        try:
            with urllib.request.urlopen(f"{url}/f/{tok}", data=body, timeout=60) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    with ThreadPoolExecutor(max_workers=len(posts)) as pool:
        return list(pool.map(post, posts))


def test_parallel_forwards_never_pass_the_caps(cfg, clock, member, smtp_server):
    """50 parallel submissions on one member's link, 5 friends each, against the cap of 20; then
    45 from one address over 9 members' links against its cap of 50. Checked then counted
    apart, the first sent 250 copies and the second 225."""
    from newsletter.journal import Journal

    app = web.create_app(cfg, clock=clock)
    per_member, per_ip = web.FORWARDS_PER_TOKEN_PER_DAY, web.FORWARDS_PER_IP_PER_DAY
    friends = [[f"f{i}-{k}@example.org" for k in range(5)] for i in range(50)]
    with served(cfg, app) as url:
        tok = token("forward", member, "es")
        statuses = fire(url, [(tok, friends[i]) for i in range(50)])
        assert len(smtp_server.received) == per_member == 20
        assert statuses.count(200) == per_member // 5 and statuses.count(429) == 50 - 4
        clock.now += DAY + 60  # a day later: caps start again
        with Journal(cfg.path("state")) as j:
            members = [Contacts(j).add(f"m{i}@example.org", f"M{i}") for i in range(9)]
        posts = [(token("forward", m, "es"), friends[i % 50]) for i, m in enumerate(members * 5)]
        statuses = fire(url, posts)
    assert len(smtp_server.received) - 20 == per_ip == 50
    assert statuses.count(200) == per_ip // 5
    counted = sum(row[2] for row in state(cfg)[2])
    assert counted == len(smtp_server.received) == 70


def test_index_is_rendered_once_per_change(client, cfg, monkeypatch, project, clock):
    """GET / reads the alerts only when what the page is made of changed: which alerts went out,
    their files, the templates (issue 8, item 6); it looks for changes at most once per RECHECK
    of the app's clock. Its speed is measured in benchmarks/bench_web.py."""
    import os
    import shutil

    from newsletter import content

    mark_sent(cfg)
    reads = []
    real = content.load_alert
    monkeypatch.setattr(content, "load_alert", lambda *a, **k: reads.append(a[1]) or real(*a, **k))
    first = client.get("/").get_data(as_text=True)
    assert len(reads) == 1
    for _ in range(3):
        clock.now += web.archive.RECHECK  # looked again: nothing changed
        assert client.get("/").get_data(as_text=True) == first
    assert len(reads) == 1  # served as it was

    def bump(path: Path) -> None:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        clock.now += web.archive.RECHECK

    bump(cfg.path("alerts") / ALERT_ID / "es.md")  # an editor fixes a typo
    client.get("/")
    assert len(reads) == 2
    bump(cfg.path("templates") / "web" / "index.html")
    client.get("/")
    assert len(reads) == 3
    second = "2011-08-19-second"  # another alert goes out
    shutil.copytree(cfg.path("alerts") / ALERT_ID, cfg.path("alerts") / second)
    clock.now += web.archive.RECHECK
    assert second not in client.get("/").get_data(as_text=True)  # in the folder, not sent
    mark_sent(cfg, second)
    assert second not in client.get("/").get_data(as_text=True)  # not looked again yet
    clock.now += web.archive.RECHECK
    assert f"/a/{second}/es" in client.get("/").get_data(as_text=True)


# --- newsletter serve: a production server (issue 8, items 9 and 10) -------------------------------


def test_serve_answers_without_a_version_banner_and_logs_paths_escaped(project, monkeypatch):
    """`newsletter serve` (a real process on 127.0.0.1) answers; no Server header names what
    serves it; a request path with control characters (terminal escapes) reaches the log escaped,
    sent raw or percent-encoded."""
    import socket
    import urllib.error
    import urllib.request

    proc, port, headers, _page, first = start_serve(project, monkeypatch, "--threads", "2")
    try:
        assert headers.get("Server") is None, headers.get("Server")  # no name, no version
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/a/%1b%5b2J%1b%5b31mX/es", timeout=5)
        err.value.close()
        assert err.value.code == 404 and err.value.headers.get("Server") is None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /a/\x1b[2J\x1b]0;owned\x07Y/es HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            reply = s.recv(65536)
        assert reply.startswith(b"HTTP/1.1 ") and b"Server:" not in reply
    finally:
        proc.terminate()
        out = first.encode() + proc.communicate(timeout=10)[0]
    assert b"\x1b" not in out and b"\x07" not in out, out
    assert b'"GET /a/\\x1b[2J\\x1b[31mX/es HTTP/1.1" 404' in out, out


def test_forward_command_counts_one_friend_in_the_singular(project, smtp_server, monkeypatch):
    """ "to 1 of 1 friends": the closing line's plural forms come from the catalog."""
    from click.testing import CliRunner

    from newsletter.cli import cli

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    write_config(project, smtp_server.port)
    args = ["forward", f"alerts/{ALERT_ID}", "--from-name", "Rosa", "--lang", "en"]
    one = CliRunner().invoke(cli, [*args, "--to", "luis@example.org"])
    assert one.exit_code == 0, one.output
    assert f"to 1 of 1 friend via SMTP 127.0.0.1:{smtp_server.port}." in one.output
    two = CliRunner().invoke(cli, [*args, "--to", "a@example.org", "--to", "b@example.org"])
    assert f"to 2 of 2 friends via SMTP 127.0.0.1:{smtp_server.port}." in two.output
