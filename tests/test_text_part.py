"""The plain-text part without a web server: readable lines, and a forward a friend can act on."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from newsletter import render, tokens
from newsletter.config import load_config
from tests.conftest import ALERT_ID

ALERT = f"alerts/{ALERT_ID}"
# A line longer than 78 characters is allowed only when it is one URL that cannot be broken
# (angle brackets and the sentence's closing punctuation around it are fine).
BARE_URL = re.compile(r"^<?(?:https?://|mailto:)\S+?>?[.,;:!?)]*$")


def long_lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if len(x) > 78 and not BARE_URL.match(x.strip())]


@pytest.mark.parametrize("base_url", ["", "https://alerts.nalacc.test"])
@pytest.mark.parametrize("variant", ["member", "forward", "archive"])
def test_no_line_over_78_characters_but_a_bare_url(demo, monkeypatch, base_url, variant):
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", base_url)
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    cfg = load_config()
    for lang, ed in render.render_editions(cfg, demo / ALERT, variant).items():
        values = render.sample_values(cfg, ed) if variant == "member" else {}
        if variant == "forward":
            values = {
                tokens.FORWARD_INTRO: "Ana García le reenvió esta alerta",
                tokens.FORWARD_NOTE: "",
            }
        text = render.fill_edition(ed, values).text
        assert long_lines(text) == [], (lang, variant)
        # The forward mailto: (688+ characters) is not the text part's business: it opens the
        # mail program from the HTML; the text tells the reader to use Forward instead.
        assert "mailto:?" not in text


def test_the_mailto_forward_lets_the_friend_act(demo):
    """Without a web server, "Forward" prefills a message with what a friend needs to act: the
    headline, the petition's address, and the event's when and where."""
    cfg = load_config()
    for lang, ed in render.render_editions(cfg, demo / ALERT).items():
        url = render.sample_links(cfg, ed)[tokens.FORWARD_URL]
        assert url.startswith("mailto:?")
        body = parse_qs(urlsplit(url).query)["body"][0]
        alert_texts = {
            "es": ("Firme la petición", "Cuándo", "Dónde"),
            "en": ("Sign the petition", "When", "Where"),
        }
        sign, when, where = alert_texts[lang]
        lines = body.splitlines()
        headline = {"es": "Comunidades Seguras trae inseguridad", "en": "Secure Communities Brings"}
        assert any(line.startswith(headline[lang]) for line in lines), body
        assert "https://example.org/set-links.petition-in-alert.toml" in body
        assert f"{sign}:" in body
        assert f"{when}:" in body and "11:00" in body and "2011" in body
        assert f"{where}: Chicago Cultural Center, 79 E. Washington, Chicago, IL" in body
        assert len(body) <= render.FORWARD_BODY_MAX + 1


def test_a_friends_long_note_is_wrapped_in_the_text_part_only(demo):
    """The forwarder's name and note are theirs, of any length: the text part wraps them at 76
    (their own line breaks kept); the HTML keeps them as written (pre-line shows their breaks)."""
    import email

    from newsletter import message
    from newsletter.recipients import Recipient

    cfg = load_config()
    ed = render.render_editions(cfg, demo / ALERT, "forward")["es"]
    note = "Hola, " + "esta alerta es importante para nuestra comunidad " * 6 + "\nNos vemos."
    intro = "María Guadalupe Hernández de la Cruz y Rodríguez le reenvió esta alerta de NALACC"
    friend = Recipient(email="amiga@example.org", key="amiga@example.org", name="", language="es",
                       fields={}, line=0)
    _, data = message.prepare(cfg, ed).build(
        friend, {tokens.FORWARD_INTRO: intro, tokens.FORWARD_NOTE: note}
    )
    parts = {p.get_content_type(): p.get_payload(decode=True).decode()
             for p in email.message_from_bytes(data).walk() if not p.is_multipart()}
    text, html = parts["text/plain"], parts["text/html"]
    assert long_lines(text) == []
    assert "Nos vemos." in text.splitlines()  # the friend's own line break is kept
    assert " ".join(text.split()).count("esta alerta es importante para nuestra comunidad") == 6
    assert note.split("\n")[0].strip() in html  # the HTML keeps the note's line unbroken
