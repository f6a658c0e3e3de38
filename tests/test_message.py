"""One recipient's bytes: headers decode, tokens filled and escaped, MIME sound, DKIM verifies."""

from __future__ import annotations

import binascii
import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter import message, render, tokens
from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError
from tests.conftest import ALERT_ID

SECRET = "test-secret-0123456789abcdef"


@dataclass
class Person:
    email: str
    name: str = ""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HandEdition:
    """An Edition-like object with every token kind, independent of the templates."""

    alert_id: str = "2011-08-12-test"
    lang: str = "es"
    variant: str = "member"
    subject: str = "¡Alto a “Comunidades Seguras”! Llame hoy"
    html: str = (
        "<html><body><p>" + tokens.NAME + "</p>\n"
        '<a href="'
        + tokens.UNSUBSCRIBE_URL
        + '">Cancelar la suscripción</a> '
        + tokens.field("city")
        + " "
        + tokens.NAME
        + "\n"
        + ('<p style="color:#333">Texto largo con acentos: acción, señor, ¿por qué?</p>' * 40)
        + "\n.\n.dot at line start\n</body></html>\n"
    )
    text: str = (
        tokens.NAME
        + "\n\nBaja: "
        + tokens.UNSUBSCRIBE_URL
        + "\nCity: "
        + tokens.field("city")
        + "\n.\n"
    )
    greeting_named: str = "Hola, {name}:"
    greeting_anonymous: str = "Hola:"


LINKS = {tokens.UNSUBSCRIBE_URL: "https://alerts.example.org/u/abc.def"}


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def cfg_with(**sender: str) -> Config:
    cfg = Config()
    cfg.sender.from_ = "NALACC Alertas <alerts@nalacc.example.org>"
    for k, v in sender.items():
        setattr(cfg.sender, k, v)
    return cfg


def assert_wire_format(data: bytes) -> None:
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in data.replace(b"\r\n", b""), "bare CR"
    assert data.isascii(), "8-bit data: quoted-printable and RFC 2047 keep it 7-bit"
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        # 78 is RFC 5322's SHOULD; a signed token URL cannot be folded safely: 998 is the MUST.
        assert len(line) <= (998 if b"https://" in line else 78), line
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))
    # SMTP's DATA sends these bytes without dot-stuffing (SmtpTransport.write_data dot_safe).
    assert not data.startswith(b".") and b"\n." not in data, "a line starts with '.'"


@pytest.mark.parametrize(
    "text",
    [
        ".",
        ".leading dot",
        "a line\n.next line starts with a dot\n..two",
        "x" * 75 + ".y" * 40,  # a soft break lands before a dot
        "é" * 24 + ".",  # =C3=A9 escapes up to the break, then the dot
        "w" * 73 + "=." + "z" * 10,  # an escape right where the line is cut
    ],
)
def test_quoted_printable_never_starts_a_line_with_a_dot(text):
    encoded = message._qp(text)
    lines = encoded.split(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert all(len(line) <= 76 for line in lines)
    assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")).decode("utf-8") == text


def test_headers_decode_and_lines_are_short():
    cfg = cfg_with(reply_to="Oficina <info@nalacc.example.org>")
    prep = message.prepare(cfg, HandEdition())
    msg_id, data = prep.build(Person("jose@example.org", "José Ñúñez", {"city": "San José"}), LINKS)
    assert_wire_format(data)
    m = parse(data)
    assert m["From"].addresses[0].display_name == "NALACC Alertas"
    assert m["From"].addresses[0].addr_spec == "alerts@nalacc.example.org"
    assert m["To"].addresses[0].display_name == "José Ñúñez"
    assert m["To"].addresses[0].addr_spec == "jose@example.org"
    assert m["Subject"] == HandEdition.subject
    assert m["Reply-To"].addresses[0].addr_spec == "info@nalacc.example.org"
    assert m["Message-ID"] == msg_id and msg_id.endswith("@nalacc.example.org>")
    assert email.utils.parsedate_to_datetime(m["Date"]).tzinfo is not None
    assert m["List-Id"] == "NALACC <alerts.nalacc.example.org>"
    assert m["List-Unsubscribe"] == "<https://alerts.example.org/u/abc.def>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert m["MIME-Version"] == "1.0"
    assert m.get_content_type() == "multipart/alternative"
    kinds = [p.get_content_type() for p in m.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    assert not m.defects and all(not p.defects for p in m.walk())


def test_bodies_are_tokens_fill_of_the_edition():
    ed = HandEdition()
    prep = message.prepare(cfg_with(), ed)
    who = Person("ana@example.org", 'Ana "<b>Bold</b>" & Co', {"city": "<script>x</script>"})
    _, data = prep.build(who, LINKS)
    m = parse(data)
    values = prep.values(who, LINKS)
    html = m.get_body(("html",)).get_content().replace("\r\n", "\n")
    text = m.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert html == tokens.fill(ed.html, values, escape_html=True)
    assert text == tokens.fill(ed.text, values, escape_html=False)
    assert "<b>Bold</b>" not in html and "&lt;script&gt;" in html and "<script>" not in html
    assert 'Hola, Ana "<b>Bold</b>" &amp; Co:' not in text and "Hola, Ana" in text
    assert not tokens.leftover(html) and not tokens.leftover(text)


def test_anonymous_greeting_and_a_value_that_looks_like_a_token():
    prep = message.prepare(cfg_with(), HandEdition())
    _, data = prep.build(Person("x@example.org", "", {"city": tokens.UNSUBSCRIBE_URL}), LINKS)
    text = parse(data).get_body(("plain",)).get_content()
    assert text.startswith("Hola:")
    assert f"City: {tokens.UNSUBSCRIBE_URL}" in text  # not expanded a second time


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r\nBcc: x@evil.example",
        "Eve\nTo: x@evil.example",
        'Eve", x@evil.example, "',
        "Eve\x00\r",
    ],
)
def test_a_hostile_name_adds_no_header_or_recipient(name):
    prep = message.prepare(cfg_with(), HandEdition())
    _, data = prep.build(Person("eve@example.net", name), LINKS)
    assert_wire_format(data)
    m = parse(data)
    assert m["Bcc"] is None and m["Cc"] is None
    assert len(m.get_all("To")) == 1
    assert [a.addr_spec for a in m["To"].addresses] == ["eve@example.net"]
    assert "\n" not in m["To"].addresses[0].display_name


@pytest.mark.parametrize(
    "address", ["a@b.example\r\nBcc: x@evil.example", "a b@example.org", "<a@b.example>", "x"]
)
def test_an_address_that_could_add_a_recipient_is_refused(address):
    prep = message.prepare(cfg_with(), HandEdition())
    with pytest.raises(NewsletterError):
        prep.build(Person(address, "A"), LINKS)


def test_message_ids_are_unique_and_the_subject_can_be_overridden():
    prep = message.prepare(cfg_with(), HandEdition(), subject="[TEST] Hola")
    ids = {prep.build(Person(f"p{i}@example.org"), LINKS)[0] for i in range(200)}
    assert len(ids) == 200
    assert parse(prep.build(Person("p@example.org"), LINKS)[1])["Subject"] == "[TEST] Hola"


def test_one_message_id_does_not_tell_the_next():
    # A member sees their own copy's Message-ID; with "<random prefix>.<counter>@domain" they
    # knew every other member's ids of that send (the counters beside theirs), and a Message-ID
    # quoted in a bounce or a spam complaint ties the report to that member (bounces/match.py):
    # one member could have had the others suppressed for good. Keyed hashes share nothing.
    prep = message.prepare(cfg_with(), HandEdition())
    ids = [prep.new_message_id() for _ in range(300)]
    local = [i.strip("<>").split("@")[0] for i in ids]
    assert len(set(local)) == 300
    assert len({x[:8] for x in local}) == 300  # no shared prefix
    assert len({x[-8:] for x in local}) == 300  # no shared suffix
    assert all(re.fullmatch(r"[0-9a-f]{32}", x) for x in local)


def test_forward_variant_carries_no_list_unsubscribe():
    ed = HandEdition(variant="forward")
    _, data = message.prepare(cfg_with(), ed).build(Person("friend@example.org"), {})
    m = parse(data)
    assert m["List-Unsubscribe"] is None and m["List-Unsubscribe-Post"] is None


def test_mailto_only_unsubscribe_has_no_one_click_post():
    prep = message.prepare(cfg_with(unsubscribe_mailto="baja@nalacc.example.org"), HandEdition())
    _, data = prep.build(Person("a@example.org"), {tokens.UNSUBSCRIBE_URL: "mailto:x"})
    m = parse(data)
    assert m["List-Unsubscribe"] == "<mailto:baja@nalacc.example.org?subject=unsubscribe>"
    assert m["List-Unsubscribe-Post"] is None


def test_bad_sender_names_the_setting():
    cfg = cfg_with(from_="NALACC")
    with pytest.raises(NewsletterError, match=r"\[sender\] from"):
        message.prepare(cfg, HandEdition())


def test_real_alert_both_languages(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (project / "newsletter.toml").write_text(
        '[sender]\nfrom = "NALACC <alerts@nalacc.example.org>"\n'
        '[web]\nbase_url = "https://alerts.example.org"\n',
        encoding="utf-8",
    )
    cfg = load_config()
    for lang, ed in render.render_editions(cfg, Path("alerts") / ALERT_ID).items():
        prep = message.prepare(cfg, ed)
        who = Person("rosa@example.org", "Rosa Quiñónez", {"city": "Los Ángeles"})
        _, data = prep.build(who, render.sample_links(cfg, ed))
        assert_wire_format(data)
        m = parse(data)
        assert m["Subject"] == ed.subject
        html = m.get_body(("html",)).get_content()
        text = m.get_body(("plain",)).get_content()
        assert "Rosa Quiñónez" in text and "Rosa Quiñónez" in html
        assert not tokens.leftover(html) and not tokens.leftover(text)
        assert f'lang="{lang}"' in html
        assert m["List-Unsubscribe"].startswith("<https://alerts.example.org/u/")


# --- DKIM ----------------------------------------------------------------------------------


def _key_pair(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def test_dkim_signature_verifies_and_covers_the_unsubscribe_headers(tmp_path):
    key_file, record = _key_pair(tmp_path)
    cfg = cfg_with()
    cfg.dkim.selector, cfg.dkim.domain, cfg.dkim.key_file = (
        "nl1",
        "nalacc.example.org",
        str(key_file),
    )
    prep = message.prepare(cfg, HandEdition())
    _, data = prep.build(Person("jose@example.org", "José Ñúñez", {"city": "X"}), LINKS)
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"nl1._domainkey.nalacc.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    signed = re.search(rb"\bh=([^;]+);", data.replace(b"\r\n ", b"").replace(b"\r\n\t", b""))
    assert signed is not None
    covered = {h.strip().lower() for h in signed.group(1).replace(b" ", b"").split(b":")}
    for h in (
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    ):
        assert h in covered
    tampered = data.replace(b"Subject: ", b"Subject: X", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_dkim_missing_or_bad_key_is_one_clear_line(tmp_path):
    cfg = cfg_with()
    cfg.dkim.selector, cfg.dkim.domain = "nl1", "nalacc.example.org"
    cfg.dkim.key_file = str(tmp_path / "missing.pem")
    with pytest.raises(NewsletterError, match=r"\[dkim\] key_file .*cannot read"):
        message.prepare(cfg, HandEdition())
    (tmp_path / "bad.pem").write_text("not a key")
    cfg.dkim.key_file = str(tmp_path / "bad.pem")
    with pytest.raises(NewsletterError, match=r"\[dkim\] key_file .*not a usable"):
        message.prepare(cfg, HandEdition())
    cfg.dkim.selector = ""
    with pytest.raises(NewsletterError, match=r"\[dkim\] selector"):
        message.prepare(cfg, HandEdition())
