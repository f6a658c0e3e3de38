"""The public pages in headless Chromium, served by waitress (as `newsletter serve` does) on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import Result

from newsletter import links, web
from newsletter.config import Config, load_config
from newsletter.contacts import Contacts
from tests.conftest import ALERT_ID, drain_mail, fill_placeholders
from tests.test_web import SECRET, mark_sent, state, write_config


@dataclass
class Live:
    url: str
    cfg: Config


@pytest.fixture
def live(project, smtp_server, monkeypatch) -> Iterator[Live]:
    """The app on the server `newsletter serve` uses (waitress), in a thread; [web] base_url
    points at it, so sent emails link here."""
    from newsletter.web import serve

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = load_config(write_config(project, smtp_server.port))
    app = web.create_app(cfg)
    server = serve.make_server(cfg, "127.0.0.1", 0, app=app)
    url = f"http://127.0.0.1:{server.effective_port}"
    cfg.web.base_url = url  # the app's own config object: its archive links point here too
    write_config(project, smtp_server.port, base_url=url)  # for `newsletter send` in the test
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Live(url, cfg)
    finally:
        serve.stop(server)
        thread.join(timeout=5)
        drain_mail(app)  # no sign-up email on its way when the SMTP server stops


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def unlabelled_fields(page) -> list[str]:
    """Names of visible form fields without a <label for> or an enclosing <label>."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, select')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length))
            .map(e => e.name || e.id)"""
    )


def test_bad_token_page_at_375px(live, page):
    page.set_viewport_size({"width": 375, "height": 700})
    resp = page.goto(f"{live.url}/u/not-a-token")
    assert resp is not None and resp.status == 400
    assert page.locator("html").get_attribute("lang") in ("es", "en")
    assert page.get_by_text("This link is not valid").is_visible()
    assert page.get_by_text("Este enlace no es válido").is_visible()
    assert no_horizontal_scroll(page)


def test_language_page_in_the_target_language_at_375px(live, page):
    page.set_viewport_size({"width": 375, "height": 700})
    from newsletter.journal import Journal

    with Journal(live.cfg.path("state")) as j:
        person = Contacts(j).public_id(Contacts(j).add("ana@example.org", "Ana Pérez"))
    tok = links.make_token(SECRET, "language", person, ALERT_ID, "es")
    page.goto(f"{live.url}/l/{tok}")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("button", name="Yes, send them in English").is_visible()
    assert no_horizontal_scroll(page)
    assert unlabelled_fields(page) == []


# --- the whole way: a delivered message's links, clicked -------------------------------------------

MEMBERS = "email,name,language\nana@example.org,Ana Pérez,es\nbeto@example.org,Beto,en\n"


def send(project: Path, alert_id: str = ALERT_ID) -> Result:
    """`newsletter send` as a user runs it, to the members' CSV, through the test SMTP server."""
    from click.testing import CliRunner

    from newsletter.cli import cli

    (project / "members.csv").write_text(MEMBERS, encoding="utf-8")
    fill_placeholders(project)  # a real send refuses example.org values
    real = {  # write_config's example.org sender, as an organisation would have set it
        "NEWSLETTER_SENDER_FROM": "NALACC <alerts@nalacc.test>",
        "NEWSLETTER_SENDER_REPLY_TO": "NALACC <info@nalacc.test>",
        "NEWSLETTER_SENDER_UNSUBSCRIBE_MAILTO": "unsubscribe@nalacc.test",
    }
    result = CliRunner().invoke(
        cli, ["send", f"alerts/{alert_id}", "--to", "members.csv", "--yes"], env=real
    )
    assert result.exit_code == 0, result.output
    return result


def next_alert(project: Path, n: int) -> str:
    """Next week's alert: a copy of the sample under a new id (the folder name is the id)."""
    alert_id = f"2011-08-{12 + 7 * n}-secure-communities"
    shutil.copytree(project / "alerts" / ALERT_ID, project / "alerts" / alert_id)
    return alert_id


def links_in(msg) -> dict[str, str]:
    """The member's links in a message's HTML part, by path prefix (/f/, /l/, /u/, /a/)."""
    html = msg.get_body(("html",)).get_content()
    found = {}
    for url in re.findall(r'href="(http://127\.0\.0\.1:\d+/[^"]+)"', html):
        found.setdefault(urlsplit(url).path[:3], unescape(url))
    return found


def to(smtp_server, address: str) -> list:
    return [r.message for r in smtp_server.to(address)]


def test_forward_language_and_unsubscribe_from_a_delivered_message(
    live, page, smtp_server, project
):
    send(project)
    [ana] = to(smtp_server, "ana@example.org")
    assert ana["Subject"].startswith("Alerta")
    found = links_in(ana)
    assert {"/f/", "/l/", "/u/", "/a/"} <= set(found)

    # Mail scanners GET every link: nothing changes.
    before = state(live.cfg)
    html = ana.get_body(("html",)).get_content()
    for url in set(re.findall(r'href="(http://127\.0\.0\.1:\d+/[^"]+)"', html)):
        with urllib.request.urlopen(unescape(url), timeout=10) as resp:
            assert resp.status == 200
    assert state(live.cfg) == before

    # Forward to two friends, with a note, in the browser.
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(found["/f/"])
    assert page.locator("html").get_attribute("lang") == "es"
    assert no_horizontal_scroll(page) and unlabelled_fields(page) == []
    assert page.get_by_label("Su nombre").input_value() == "Ana Pérez"
    page.get_by_label("Correo electrónico de su amigo/a 1").fill("luis@example.org")
    page.get_by_label("Correo electrónico de su amigo/a 2").fill("marta@example.net")
    page.get_by_label("Una nota para sus amistades (opcional)").fill(
        "¡Vengan!\nNos vemos el martes <3"
    )
    page.get_by_role("button", name="Enviar").click()
    page.get_by_text("Enviamos la alerta a 2 personas.").wait_for()
    assert no_horizontal_scroll(page)
    for friend in ("luis@example.org", "marta@example.net"):
        smtp_server.wait_for(3 + ("marta" in friend))
        [copy] = to(smtp_server, friend)
        body = copy.get_body(("html",)).get_content()
        text = copy.get_body(("plain",)).get_content()
        assert "Nos vemos el martes &lt;3" in body and "Nos vemos el martes <3" in text
        assert "Ana Pérez" in text
        assert copy["Reply-To"] == "ana@example.org"
        for part in (body, text):
            assert "/f/" not in part and "/l/" not in part and "/u/" not in part
    assert state(live.cfg)[2] == [(1, ALERT_ID, 2)]

    # Switch to English: the page speaks English; the next alert comes in English.
    page.goto(found["/l/"])
    assert page.locator("html").get_attribute("lang") == "en"
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Yes, send them in English").click()
    page.get_by_text("we will write to you in English").wait_for()
    second = next_alert(project, 1)
    send(project, second)
    ana2 = [m for m in to(smtp_server, "ana@example.org") if second in str(links_in(m).get("/a/"))]
    assert len(ana2) == 1
    assert '<html lang="en"' in ana2[0].get_body(("html",)).get_content()
    assert ana2[0]["Subject"].startswith("Action alert")

    # Unsubscribe through the page (it offers Spanish instead); the next send skips Ana.
    page.goto(links_in(ana2[0])["/u/"])
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("link", name="Reciba nuestros correos en español").is_visible()
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_text("You are unsubscribed").wait_for()
    count = len(to(smtp_server, "ana@example.org"))
    third = next_alert(project, 2)
    send(project, third)
    assert len(to(smtp_server, "ana@example.org")) == count
    assert any(third in str(links_in(m).get("/a/")) for m in to(smtp_server, "beto@example.org"))


def test_one_click_post_to_the_list_unsubscribe_url(live, smtp_server, project):
    send(project)
    [beto] = to(smtp_server, "beto@example.org")
    assert beto["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(http[^>]+)>", beto["List-Unsubscribe"]).group(1)
    with urllib.request.urlopen(url, timeout=10) as resp:  # a GET (a scanner) changes nothing
        assert resp.status == 200
    assert state(live.cfg)[1] == []
    req = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    assert state(live.cfg)[1] == [("beto@example.org", "one-click")]


def test_pages_at_375px(live, page, project):
    """The pages a member sees, at phone width: no sideways scroll, every field labelled."""
    from newsletter.journal import Journal

    with Journal(live.cfg.path("state")) as j:
        cid = Contacts(j).public_id(Contacts(j).add("ana@example.org", "Ana Pérez"))
    mark_sent(live.cfg)  # the archive shows alerts that went out
    page.set_viewport_size({"width": 375, "height": 800})
    urls = {
        "index": "/",
        "archive": f"/a/{ALERT_ID}/es",
        "forward": f"/f/{links.make_token(SECRET, 'forward', cid, ALERT_ID, 'es')}",
        "unsubscribe": f"/u/{links.make_token(SECRET, 'unsubscribe', cid, ALERT_ID, 'en')}",
    }
    for name, path in urls.items():
        page.goto(live.url + path)
        assert page.locator("html").get_attribute("lang") in ("es", "en"), name
        assert no_horizontal_scroll(page), name
        assert unlabelled_fields(page) == [], name
    # The browser itself stops a note at the limit (maxlength); the server checks it again.
    page.goto(live.url + urls["forward"])
    page.get_by_label("Una nota para sus amistades (opcional)").fill("x" * 600)
    assert (
        len(page.get_by_label("Una nota para sus amistades (opcional)").input_value())
        == web.NOTE_MAX
    )


def test_preview_of_a_picked_member_links_to_a_local_serve(live, page, project):
    """`newsletter preview` with a recipient picked: a click in the email opens their page on serve.

    serve refuses to be framed (X-Frame-Options), so the preview's links must leave its iframe.
    """
    from newsletter.preview import PreviewServer

    csv = project / "members.csv"
    csv.write_text(MEMBERS, encoding="utf-8")
    with PreviewServer(live.cfg, project / "alerts" / ALERT_ID, port=0, recipients_csv=csv) as pv:
        beto = next(r for r in pv.snapshot.recipients if r.email == "beto@example.org")
        page.goto(f"{pv.url}?r={beto.line}")
        # Not sent to yet: the page offers to add him (a POST; looking writes nothing).
        page.get_by_role("button", name="Add Beto to newsletter.db").click()
        page.wait_for_url(f"{pv.url}?r={beto.line}&lang=en")
        link = page.frame_locator("#desktop").locator(f'a[href^="{live.url}/f/"]').first
        with page.context.expect_page(timeout=10_000) as opened:
            link.click()
        form = opened.value
        form.wait_for_load_state()
        assert form.url.startswith(f"{live.url}/f/")
        assert form.locator("html").get_attribute("lang") == "en"  # Beto reads English
        assert form.get_by_label("Your name").input_value() == "Beto"


def test_pages_work_without_javascript(live, browser, smtp_server):
    """Forward, language and unsubscribe with JavaScript off (as some readers and mail apps browse)."""
    from newsletter.journal import Journal

    with Journal(live.cfg.path("state")) as j:
        cid = Contacts(j).public_id(Contacts(j).add("ana@example.org", "Ana Pérez"))
    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto(f"{live.url}/f/{links.make_token(SECRET, 'forward', cid, ALERT_ID, 'en')}")
        page.get_by_label("Friend's email 1").fill("luis@example.org")
        page.get_by_role("button", name="Send to my friends").click()
        page.get_by_text("We sent the alert to 1 friend.").wait_for()
        assert len(smtp_server.wait_for(1)) == 1
        page.goto(f"{live.url}/l/{links.make_token(SECRET, 'language', cid, ALERT_ID, 'en')}")
        page.get_by_role("button").click()
        page.get_by_text("A partir de la próxima alerta le escribiremos en español").wait_for()
        page.goto(f"{live.url}/u/{links.make_token(SECRET, 'unsubscribe', cid, ALERT_ID, 'es')}")
        page.get_by_role("button", name="Cancelar la suscripción").click()
        page.get_by_text("Su suscripción está cancelada").wait_for()
    finally:
        context.close()
    assert state(live.cfg)[0][0][3] == "es" and state(live.cfg)[1][0][1] == "unsubscribe page"
