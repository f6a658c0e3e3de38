"""The per-message shortcuts of a build give what the general way gives: the three member
tokens signed from one payload, a display name in one encoded-word, a value's quoted-printable
shared between the text and HTML parts only when escaping leaves it unchanged."""

from __future__ import annotations

import base64
import email
import email.policy
import time

import pytest

from newsletter import links, message

SECRET = "test-secret-0123456789abcdef"


def test_the_member_tokens_made_together_are_each_made_alone(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1764489123.5)
    purposes = ("forward", "language", "unsubscribe")
    together = links.make_tokens(SECRET, purposes, "ab" * 16, "2011-08-12-x", "es")
    assert together == [links.make_token(SECRET, p, "ab" * 16, "2011-08-12-x", "es") for p in purposes]
    for purpose, token in zip(purposes, together, strict=True):  # each only for its purpose
        assert links.read_token(SECRET, purpose, token, now=1764489124).person == "ab" * 16
        for other in set(purposes) - {purpose}:
            with pytest.raises(links.BadToken):
                links.read_token(SECRET, other, token, now=1764489124)
    with pytest.raises(ValueError):
        links.make_tokens(SECRET, ("forward", "subscribe"), 1, "a", "es")


@pytest.mark.parametrize("name", ["Ñ" * 22 + "a", "Ñ" * 22 + "ab", "Ñ" * 23, "José", "Ñ" * 80])
def test_a_name_is_encoded_words_of_at_most_45_octets_each(name):
    encoded = message.encoded_words(name)
    words = encoded.split("\r\n ")
    assert all(len(w) <= 75 for w in words)
    raw = [base64.b64decode(w[len("=?utf-8?b?") : -2]) for w in words]
    assert all(len(r) <= 45 for r in raw) and b"".join(raw).decode() == name
    assert (len(words) == 1) == (len(name.encode()) <= 45)  # one word whenever it fits
    if len(words) == 1:
        header = email.message_from_bytes(
            f"To: {encoded} <a@example.org>\r\n\r\n".encode(), policy=email.policy.default
        )["To"]
        assert header.addresses[0].display_name == name


def test_a_value_escaping_changes_is_encoded_apart_for_each_part():
    class Ed:
        alert_id, lang, subject, variant = "a", "es", "S", "member"
        greeting_named, greeting_anonymous = "Hola, {name}:", "Hola:"
        html = "<p>__NL_NAME__ __NL_FIELD_CITY__ __NL_VIEW_URL__</p>"
        text = "__NL_NAME__ __NL_FIELD_CITY__ __NL_VIEW_URL__"

    from tests.test_message import cfg_with

    class Who:
        email, name, fields = "ana@example.org", "Ana", {"city": "Tom & <Jerry>"}

    prep = message.prepare(cfg_with(), Ed())
    _, data = prep.build(Who(), {"__NL_VIEW_URL__": "https://x.test/a?b=1&c=2"})
    m = email.message_from_bytes(data, policy=email.policy.default)
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert "Tom & <Jerry> https://x.test/a?b=1&c=2" in text
    assert "Tom &amp; &lt;Jerry&gt; https://x.test/a?b=1&amp;c=2" in html
    assert "Hola, Ana:" in text and "Hola, Ana:" in html  # the same bytes serve both
