"""The sign-up pages (/s, /c/<token>) through Flask's test client, a real SQLite file and a real
SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
import threading

import pytest
from click.testing import CliRunner

from newsletter import links, subscribers, web
from newsletter.cli import cli
from newsletter.contacts import Contacts
from newsletter.journal import Journal
from newsletter.suppressions import Suppressions
from tests import test_web
from tests.conftest import drain_mail
from tests.test_web import SECRET

DAY = 86400


# The config (test SMTP server, base URL http://127.0.0.1:8080, the secret) and the app's clock
# of tests/test_web.py.
cfg = test_web.cfg
clock = test_web.clock


@pytest.fixture
def app(cfg, clock):
    app = web.create_app(cfg, clock=clock)
    yield app
    drain(app)  # before the SMTP server stops (conftest.drain_mail)


@pytest.fixture
def client(app):
    return app.test_client()


drain = drain_mail


def post(client, email="luz@example.org", ip="203.0.113.7", **form):
    data = {"email": email, "name": "Luz", "lang": "es", "ui": "es", "src": "form", **form}
    return answered(client.post("/s", data=data, headers={"X-Forwarded-For": ip}))


def answered(response):
    """The response read and closed, as a server does once it has sent it (the sign-up email
    is queued only then)."""
    response.get_data()
    response.close()
    return response


def confirm_url(smtp_server, address: str) -> str:
    [msg] = [r.message for r in smtp_server.to(address)]
    text = msg.get_body(("plain",)).get_content()
    return re.search(r"(http://127\.0\.0\.1:8080/c/\S+)", text).group(1)


def path_of(url: str) -> str:
    return url.split("127.0.0.1:8080", 1)[1]


# --- the form ---------------------------------------------------------------------------------


def test_form_in_both_languages_with_consent_and_a_language_switch(client):
    es = client.get("/s").get_data(as_text=True)
    assert '<html lang="es"' in es and "Suscríbase a nuestras alertas de acción" in es
    assert "Quiero recibir por correo electrónico las alertas de acción de NALACC" in es
    assert 'href="/s?lang=en"' in es and 'name="website"' in es and "csrf" not in es
    en = client.get("/s?lang=en&src=forward").get_data(as_text=True)
    assert '<html lang="en"' in en and "I want to receive the NALACC action alerts" in en
    assert 'name="src" value="forward"' in en and 'href="/s?lang=es&amp;src=forward"' in en
    assert 'value="en" checked' in en
    # An unknown source is a plain "form".
    assert 'name="src" value="form"' in client.get("/s?src=evil").get_data(as_text=True)


def test_a_bad_address_is_shown_back_with_an_error(client, smtp_server, app):
    r = post(client, email="not an address")
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert "Escriba una dirección de correo electrónico válida." in html
    assert 'value="not an address"' in html
    drain(app)
    assert smtp_server.received == []


# --- POST /s: one answer for every state --------------------------------------------------------


def test_same_page_whatever_the_state_and_mail_only_where_allowed(cfg, client, app, smtp_server):
    with Journal(cfg.path("state"), secret=SECRET) as j:
        Contacts(j).add("member@example.org", "Member")
        Suppressions(j).add("left@example.org", "unsubscribe page")
        Suppressions(j).add("bounced@example.org", "bounced: 550 5.1.1 no such user")
        Suppressions(j).add("complained@example.org", "complained")
    cases = [
        ("new@example.org", {}),
        ("member@example.org", {}),
        ("left@example.org", {}),
        ("bounced@example.org", {}),
        ("complained@example.org", {}),
        ("new@example.org", {}),  # again within 24 h: over the address cap
        ("bot@example.org", {"website": "http://spam.example"}),  # the honeypot
    ]
    pages = set()
    for i, (address, extra) in enumerate(cases):
        r = post(client, address, ip=f"198.51.{i}.1", **extra)
        assert r.status_code == 200
        pages.add(r.get_data())
    assert len(pages) == 1
    page = pages.pop().decode()
    assert "Revise su correo electrónico" in page and "7 días" in page
    drain(app)
    got = sorted(a for r in smtp_server.received for a in r.rcpt_tos)
    assert got == ["left@example.org", "member@example.org", "new@example.org"]


def test_the_answer_does_not_wait_for_the_mail_server(client, app, smtp_server):
    """The email goes out from a thread: the page is back while the server still holds it."""
    release = threading.Event()

    async def hold(_rec):
        for _ in range(1000):  # bounded: 10 s at most
            if release.is_set():
                return None
            await asyncio.sleep(0.01)
        return None

    smtp_server.on_data = hold
    try:
        assert post(client).status_code == 200
        assert smtp_server.received == []  # answered; the message is still in DATA
    finally:
        release.set()
    drain(app)
    assert len(smtp_server.to("luz@example.org")) == 1


# --- caps -------------------------------------------------------------------------------------


def test_caps_per_address_and_per_network(cfg, client, app, smtp_server, clock):
    cfg.subscribe.per_network_per_hour = 3
    for i in range(5):
        assert post(client, f"p{i}@example.org", ip=f"203.0.113.{i + 1}").status_code == 200
    assert post(client, "p0@example.org", ip="192.0.2.1").status_code == 200  # address cap
    drain(app)
    assert sorted(a for r in smtp_server.received for a in r.rcpt_tos) == [
        "p0@example.org",
        "p1@example.org",
        "p2@example.org",
    ]
    clock.now += 3601  # an hour on: the network may ask again, p0 not before 24 h
    post(client, "p3@example.org", ip="203.0.113.50")
    post(client, "p0@example.org", ip="192.0.2.1")
    drain(app)
    assert len(smtp_server.received) == 4 and smtp_server.to("p3@example.org")
    clock.now += DAY
    post(client, "p0@example.org", ip="192.0.2.1")
    drain(app)
    assert len(smtp_server.to("p0@example.org")) == 2


# --- the confirmation link ----------------------------------------------------------------------


def test_scanner_get_confirms_nothing_the_button_does_once(cfg, client, app, smtp_server):
    post(client, "luz@example.org", name="Luz Ramírez", lang="es", src="forward")
    drain(app)
    [confirmation] = [r.message for r in smtp_server.received]
    assert confirmation["Subject"] == "Confirme su suscripción a las alertas de acción de NALACC"
    url = confirm_url(smtp_server, "luz@example.org")
    for _ in range(2):  # a scanner, twice
        page = client.get(path_of(url))
        assert page.status_code == 200 and "Confirmar mi suscripción" in page.get_data(as_text=True)
        assert page.headers["Cache-Control"] == "no-store"
    with Journal(cfg.path("state"), secret=SECRET) as j:
        assert Contacts(j).find("luz@example.org") is None
    done = client.post(path_of(url))
    assert done.status_code == 200 and "Suscripción confirmada" in done.get_data(as_text=True)
    assert client.post(path_of(url)).status_code == 200  # a double click
    drain(app)
    with Journal(cfg.path("state"), secret=SECRET) as j:
        rec = subscribers.subscriber(j, "luz@example.org")
        assert (rec.name, rec.language, rec.source) == ("Luz Ramírez", "es", "forward")
    welcome = [r.message for r in smtp_server.to("luz@example.org")][1:]
    assert len(welcome) == 1  # one welcome, not one per click
    assert welcome[0]["Subject"] == "Le damos la bienvenida a las alertas de acción de NALACC"
    unsub = re.search(r"<(http[^>]+)>", welcome[0]["List-Unsubscribe"]).group(1)
    # The welcome's unsubscribe link works (and the confirmation link cannot undo it).
    assert client.post(path_of(unsub), data={"confirm": "1"}).status_code == 200
    assert client.post(path_of(url)).status_code == 409
    with Journal(cfg.path("state"), secret=SECRET) as j:
        assert Suppressions(j).has("luz@example.org")


def test_welcome_off_and_expired_or_bad_links(cfg, client, app, smtp_server, clock):
    cfg.subscribe.welcome = False
    post(client)
    drain(app)
    url = confirm_url(smtp_server, "luz@example.org")
    assert client.post(path_of(url)).status_code == 200
    drain(app)
    assert len(smtp_server.received) == 1  # no welcome
    assert client.get("/c/not-a-token").status_code == 400
    clock.now += 7 * DAY + 1
    r = client.post(path_of(url))
    assert r.status_code == 400 and "This link has expired" in r.get_data(as_text=True)


def test_resubscribe_after_unsubscribing(cfg, client, app, smtp_server, clock):
    with Journal(cfg.path("state"), secret=SECRET) as j:
        cid = Contacts(j).add("ana@example.org", "Ana")
    tok = links.make_token(SECRET, "unsubscribe", cid, "2011-08-12-secure-communities", "en")
    assert client.post(f"/u/{tok}", data={"confirm": "1"}).status_code == 200
    clock.now += 60
    post(client, "ana@example.org", lang="en", ui="en")
    drain(app)
    url = confirm_url(smtp_server, "ana@example.org")
    assert client.post(path_of(url)).status_code == 200
    with Journal(cfg.path("state"), secret=SECRET) as j:
        assert not Suppressions(j).has("ana@example.org")
        assert [r.email for r in subscribers.web_recipients(j)] == ["ana@example.org"]
        assert Contacts(j).find("ana@example.org").language_pref == "en"


# --- links to the page, and the form for other sites ------------------------------------------------


def test_forwarded_and_archived_copies_invite_to_the_page(cfg):
    from newsletter import render

    alert = "alerts/2011-08-12-secure-communities"
    fwd = render.render_edition(cfg, cfg.path("alerts") / alert.split("/")[1], "es", "forward")
    assert 'href="http://127.0.0.1:8080/s?lang=es&amp;src=forward"' in fwd.html
    arch = render.render_edition(cfg, cfg.path("alerts") / alert.split("/")[1], "en", "archive")
    assert "http://127.0.0.1:8080/s?lang=en&src=archive" in arch.text


def test_subscribe_form_command_prints_a_form_that_works_cross_site(cfg, client, app, smtp_server):
    result = CliRunner().invoke(cli, ["subscribe-form", "--lang", "es"])
    assert result.exit_code == 0, result.output
    html = result.output
    assert 'action="http://127.0.0.1:8080/s"' in html and 'name="src" value="embed"' in html
    assert "Su correo electrónico" in html and "Puedo cancelar la suscripción" in html
    assert "<html" not in html and "csrf" not in html
    # What the pasted form posts, from another site, is taken like the page's own.
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))
    r = answered(
        client.post(
            "/s",
            data={**fields, "email": "embed@example.org", "lang": "es", "website": ""},
            headers={
                "Origin": "https://nalacc.example.org",
                "Referer": "https://nalacc.example.org/",
            },
        )
    )
    assert r.status_code == 200
    drain(app)
    assert confirm_url(smtp_server, "embed@example.org")


def test_subscribe_form_needs_a_base_url(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (project / "newsletter.toml").write_text("[org]\nname = 'NALACC'\n")
    result = CliRunner().invoke(cli, ["subscribe-form", "--lang", "en"])
    assert result.exit_code == 1 and "[web] base_url is not set" in result.output


def test_confirmation_link_is_redacted_from_logs():
    assert web.redact("/c/abc.def.ghi") == "/c/…"


def test_without_a_base_url_the_link_points_where_the_form_was_sent(cfg, clock, smtp_server):
    """`serve` on loopback needs no base URL (local use): the link must still be whole."""
    cfg.web.base_url = ""
    app = web.create_app(cfg, clock=clock)
    post(app.test_client())
    drain(app)
    [msg] = [r.message for r in smtp_server.received]
    text = msg.get_body(("plain",)).get_content()
    url = re.search(r"(http://localhost/c/\S+)", text).group(1)
    assert app.test_client().get(url.removeprefix("http://localhost")).status_code == 200


def test_the_archive_index_links_to_the_form(client):
    html = client.get("/?lang=en").get_data(as_text=True)
    assert 'href="/s?lang=en&amp;src=archive"' in html and "Subscribe to our action alerts" in html


def test_a_refused_sign_up_email_leaves_no_address_in_the_log(client, app, smtp_server, caplog):
    # Anyone can type anyone's address into the form; the mail server's refusal ("550 5.1.1
    # <addr>: user unknown") reached the server log with the address twice, so the log kept
    # a record of who was signed up (the state file keeps none of an unconfirmed sign-up).
    smtp_server.on_data = lambda rec: f"550 5.1.1 <{rec.rcpt_tos[0]}>: Recipient address rejected"
    with caplog.at_level(logging.ERROR, logger="newsletter.subscribers"):
        assert post(client, "Marisol.Secret@example.org").status_code == 200
        drain(app)
    lines = [r.getMessage() for r in caplog.records if r.name == "newsletter.subscribers"]
    assert lines and "not sent" in lines[0] and "550" in lines[0]
    assert not any("marisol" in line.lower() for line in lines), lines
