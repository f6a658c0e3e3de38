"""Joining the list end to end: a friend's forwarded copy, the sign-up page in Chromium, the
confirmation email from a real SMTP server, a mail scanner, the button, and the next send."""

from __future__ import annotations

import re
import urllib.request
from html import unescape

from click.testing import CliRunner

from newsletter import subscribers
from newsletter.cli import cli
from newsletter.journal import Journal
from tests.conftest import ALERT_ID
from tests.test_web import SECRET, state
from tests.test_web_browser import (
    live,  # noqa: F401  (the fixture)
    no_horizontal_scroll,
    send,
    unlabelled_fields,
)


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_a_friend_joins_in_spanish_and_gets_the_next_alert(live, page, smtp_server, project):  # noqa: F811
    """From a forwarded copy's invitation, in two clicks from the inbox, in Spanish."""
    # Ana forwards the alert to Luz; Luz's copy invites her to subscribe, in Spanish.
    run(
        "forward",
        f"alerts/{ALERT_ID}",
        "--to",
        "luz@example.org",
        "--from-name",
        "Ana",
        "--lang",
        "es",
    )
    [copy] = [r.message for r in smtp_server.wait_for(1)]
    html = copy.get_body(("html",)).get_content()
    invite = unescape(re.search(r'href="([^"]+/s\?[^"]+)"', html).group(1))
    assert invite == f"{live.url}/s?lang=es&src=forward"

    # The sign-up page at phone width, filled in Spanish.
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(invite)
    assert page.locator("html").get_attribute("lang") == "es"
    assert no_horizontal_scroll(page) and unlabelled_fields(page) == []
    page.get_by_label("Su correo electrónico").fill("luz@example.org")
    page.get_by_label("Su nombre (opcional)").fill("Luz Ramírez")
    assert page.get_by_label("español").is_checked()
    page.get_by_role("button", name="Suscribirme").click()
    page.get_by_text("Revise su correo electrónico").first.wait_for()
    assert no_horizontal_scroll(page)

    # The confirmation email, in Spanish, from the organisation.
    received = smtp_server.wait_for(2)
    [confirmation] = [r.message for r in received[1:]]
    assert confirmation["Subject"] == "Confirme su suscripción a las alertas de acción de NALACC"
    assert confirmation["To"] == "luz@example.org"  # the typed name waits for the confirmation
    text = confirmation.get_body(("plain",)).get_content()
    link = re.search(r"(http://127\.0\.0\.1:\d+/c/\S+)", text).group(1)
    assert "NALACC, 1 Example Street" in text

    # A mail scanner opens the link: nothing changes.
    before = state(live.cfg)
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.status == 200
    assert state(live.cfg) == before
    with Journal(live.cfg.path("state"), secret=SECRET) as j:
        assert subscribers.web_recipients(j) == []

    # Luz opens it and presses the button.
    page.goto(link)
    assert page.locator("html").get_attribute("lang") == "es"
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Confirmar mi suscripción").click()
    page.get_by_text("Suscripción confirmada").first.wait_for()
    page.get_by_text("Recibirá la próxima alerta en español").wait_for()
    with Journal(live.cfg.path("state"), secret=SECRET) as j:
        rec = subscribers.subscriber(j, "luz@example.org")
    assert (rec.source, rec.language, rec.name) == ("forward", "es", "Luz Ramírez")
    welcome = smtp_server.wait_for(3)[2].message
    assert welcome["Subject"] == "Le damos la bienvenida a las alertas de acción de NALACC"

    # The next send reaches her, in Spanish, with her own links.
    result = send(project)
    assert "2 from members.csv + 1 who subscribed on the web" in result.output
    # Her mail so far: the forwarded copy, the confirmation, the welcome; then the alert.
    [alert] = [r.message for r in smtp_server.to("luz@example.org")][3:]
    assert alert["Subject"].startswith("Alerta")
    body = alert.get_body(("html",)).get_content()
    assert '<html lang="es"' in body and "Hola, Luz Ramírez:" in body
    assert f"{live.url}/u/" in alert["List-Unsubscribe"]


def test_the_sign_up_page_works_without_javascript(live, browser, smtp_server):  # noqa: F811
    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{live.url}/s?lang=en")
        page.get_by_label("Your email").fill("max@example.org")
        page.get_by_label("español").check()
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_text("Check your email").first.wait_for()
        [msg] = [r.message for r in smtp_server.wait_for(1)]
        assert msg["Subject"] == "Confirme su suscripción a las alertas de acción de NALACC"
    finally:
        context.close()


def test_the_confirmation_email_fits_a_phone(live, page):  # noqa: F811
    """The link is written out under the button: a long token must wrap, not widen the mail."""
    import email
    import email.policy

    signup = subscribers.SignUp("luz@example.org", "Luz", "es", "form")
    token = subscribers.make_confirm_token(SECRET, signup, 1.7e9)
    data = subscribers.confirmation_message(live.cfg, signup, f"{live.url}/c/{token}")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    page.set_viewport_size({"width": 375, "height": 700})
    page.set_content(msg.get_body(("html",)).get_content())
    assert no_horizontal_scroll(page)
