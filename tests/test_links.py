"""The link model: signed opaque tokens, and mailto fallbacks without a server."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from newsletter import links, tokens
from newsletter.config import load_config

SECRET = "test-secret-0123456789abcdef"


def test_token_round_trip_and_opacity() -> None:
    t = links.make_token(SECRET, "unsubscribe", 42, "2011-08-12-secure-communities", "es")
    data = links.read_token(SECRET, "unsubscribe", t)
    assert (data.person, data.alert_id, data.lang) == (42, "2011-08-12-secure-communities", "es")
    assert "@" not in t


def test_token_is_exactly_what_itsdangerous_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    # make_token skips the serializer's zlib attempt for speed: the token must not change.
    from itsdangerous import URLSafeTimedSerializer

    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    for purpose in links.PURPOSES:
        for values in ((42, "2011-08-12-secure-communities", "es"), (7, "ñ" * 40 + "a" * 40, "en")):
            ours = links.make_token(SECRET, purpose, *values)
            theirs = URLSafeTimedSerializer(SECRET, salt=f"newsletter/{purpose}").dumps(
                list(values)
            )
            if theirs.startswith("."):  # zlib won for this long, repetitive value: ours is plain
                assert not ours.startswith(".")
            else:
                assert ours == theirs
            got = links.read_token(SECRET, purpose, ours, now=1_700_000_060.0)
            assert got.person == values[0]


FIXED_NOW = 1_700_000_000.75  # a fraction, so that the timestamp's int() truncation counts
# Public ids (what links carry), and row numbers (what links made before them carried).
CONTACTS = ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "f" * 32, 0, 1, 42, 256, 123_456_789, 2**40 + 3)
ALERTS = (
    "a",
    "2011-08-12-secure-communities",
    "acción-ñandú-2024",
    'q"uo\\te\n',
    "日本語",
    "2024-03-15-ice-detainer-policy-update-los-angeles-county-sheriff",
)
LANGS = ("es", "en")


def test_fast_token_equals_itsdangerous_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_token's hand-built token is byte for byte `URLSafeTimedSerializer.dumps`.

    Where zlib shortens a payload (a long alert id beside a hex public id) dumps compresses and
    make_token does not: there the token is the uncompressed form, which loads reads too. Time is fixed by monkeypatching
    `time.time`, which both sides read.
    """
    import zlib

    from itsdangerous import URLSafeTimedSerializer
    from itsdangerous.encoding import base64_encode
    from itsdangerous.serializer import Serializer

    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)
    checked = 0
    for purpose in links.PURPOSES:
        ref = URLSafeTimedSerializer(SECRET, salt=f"newsletter/{purpose}")
        for contact_id in CONTACTS:
            for alert_id in ALERTS:
                for lang in LANGS:
                    doc = Serializer.dump_payload(  # the JSON, before zlib
                        ref, [contact_id, alert_id, lang]
                    )
                    # What dumps signs when zlib does not shorten the JSON; make_token always
                    # signs that (loads reads it either way).
                    plain = ref.make_signer().sign(base64_encode(doc)).decode()
                    if not len(zlib.compress(doc)) < len(doc) - 1:
                        assert ref.dumps([contact_id, alert_id, lang]) == plain
                        checked += 1
                    ours = links.make_token(SECRET, purpose, contact_id, alert_id, lang)
                    assert ours == plain, (purpose, contact_id, alert_id, lang)
                    assert ref.loads(ours) == [contact_id, alert_id, lang]
    assert checked >= len(links.PURPOSES) * len(CONTACTS) * len(ALERTS) * len(LANGS) * 3 // 4


def test_fast_token_follows_a_monkeypatched_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The timestamp is int(time.time()) read per call, as TimestampSigner.get_timestamp does."""
    from itsdangerous import URLSafeTimedSerializer

    ref = URLSafeTimedSerializer(SECRET, salt="newsletter/forward")
    seen = set()
    for now in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0, 1_600_000_000.5, 1.0):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        ours = links.make_token(SECRET, "forward", 9, "a1", "en")
        assert ours == ref.dumps([9, "a1", "en"])
        _, signed_at = ref.loads(ours, return_timestamp=True)
        assert signed_at.timestamp() == int(now)
        seen.add(ours)
    assert len(seen) == 4  # .0 and .999 of the same second give the same token


def test_fast_token_odd_types_match_itsdangerous(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values that are not exactly int/str take the JSON encoder path, still equal to dumps."""
    from itsdangerous import URLSafeTimedSerializer

    class Str(str):
        pass

    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)
    ref = URLSafeTimedSerializer(SECRET, salt="newsletter/language")
    for values in ((True, "a", "es"), (7, Str("ñ-a"), Str("en"))):
        assert links.make_token(SECRET, "language", *values) == ref.dumps(list(values))


def test_fast_token_is_read_back_and_one_changed_signature_byte_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)
    for purpose in links.PURPOSES:
        for contact_id, alert_id, lang in (
            ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "2011-08-12-secure-communities", "es"),
            (42, "2011-08-12-secure-communities", "es"),
            (0, "日本語", "en"),
        ):
            t = links.make_token(SECRET, purpose, contact_id, alert_id, lang)
            got = links.read_token(SECRET, purpose, t, now=FIXED_NOW + 60)
            assert got == links.TokenData(contact_id, alert_id, lang, int(FIXED_NOW))
            sig_start = t.rindex(".") + 1
            for i in (sig_start, len(t) - 2):  # first and a middle-of-last-group signature char
                swapped = "B" if t[i] == "A" else "A"
                bad = t[:i] + swapped + t[i + 1 :]
                with pytest.raises(links.BadToken) as err:
                    links.read_token(SECRET, purpose, bad, now=FIXED_NOW + 60)
                assert err.value.reason == "invalid"


def test_fast_token_depends_on_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: FIXED_NOW)
    other = "another-secret-0123456789abcdef"
    for purpose in links.PURPOSES:
        mine = links.make_token(SECRET, purpose, 42, "a1", "es")
        theirs = links.make_token(other, purpose, 42, "a1", "es")
        assert mine != theirs
        assert mine.rsplit(".", 1)[0] == theirs.rsplit(".", 1)[0]  # only the signature differs
        with pytest.raises(links.BadToken):
            links.read_token(other, purpose, mine, now=FIXED_NOW + 60)


def test_make_token_refuses_an_unknown_purpose() -> None:
    with pytest.raises(ValueError, match="unknown token purpose"):
        links.make_token(SECRET, "subscribe", 1, "a", "es")


@pytest.mark.parametrize("mangle", ["tamper", "foreign-purpose", "other-secret", "garbage"])
def test_bad_tokens_are_refused(mangle: str) -> None:
    t = links.make_token(SECRET, "unsubscribe", 42, "a", "es")
    secret, purpose = SECRET, "unsubscribe"
    if mangle == "tamper":
        t = t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB")
    elif mangle == "foreign-purpose":
        purpose = "forward"
    elif mangle == "other-secret":
        secret = "another-secret-0123456789"
    else:
        t = "not-a-token"
    with pytest.raises(links.BadToken) as err:
        links.read_token(secret, purpose, t)
    assert err.value.reason == "invalid"


def test_expired_token() -> None:
    t = links.make_token(SECRET, "forward", 1, "a", "en")
    later = time.time() + links.MAX_AGE["forward"] + 60
    with pytest.raises(links.BadToken) as err:
        links.read_token(SECRET, "forward", t, now=later)
    assert err.value.reason == "expired"
    assert links.read_token(SECRET, "forward", t, now=time.time() + 60).person == 1


def test_token_dated_in_the_future_is_refused() -> None:
    """A token signed later than the clock says, beyond a few minutes of skew, is not ours."""
    pid = "6f1c" * 8
    t = links.make_token(SECRET, "unsubscribe", pid, "a", "es")
    now = time.time()
    # Within the allowed skew (the server's clock a little behind the sender's): honoured.
    assert links.read_token(SECRET, "unsubscribe", t, now=now - 120).person == pid
    for behind in (links.CLOCK_SKEW + 60, 3600, 10 * 365 * 86400):
        with pytest.raises(links.BadToken) as err:
            links.read_token(SECRET, "unsubscribe", t, now=now - behind)
        assert err.value.reason == "invalid"


def test_tokens_carry_the_public_id() -> None:
    pid = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    t = links.make_token(SECRET, "forward", pid, "2011-08-12-x", "en")
    from itsdangerous import URLSafeTimedSerializer

    ref = URLSafeTimedSerializer(SECRET, salt="newsletter/forward")
    assert ref.loads(t) == [pid, "2011-08-12-x", "en"]
    got = links.read_token(SECRET, "forward", t)
    assert (got.person, got.alert_id, got.lang) == (pid, "2011-08-12-x", "en")
    assert abs(got.issued - time.time()) < 5


def test_member_links_with_base_url(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "newsletter.toml").write_text('[web]\nbase_url = "https://alerts.example.org/"\n')
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = load_config(project / "newsletter.toml")
    got = links.member_links(
        cfg,
        alert_id="a1",
        lang="en",
        person="7" * 32,
        subject="S",
        forward_body="B",
        language_subject="L",
        unsubscribe_subject="U",
    )
    assert got[tokens.VIEW_URL] == "https://alerts.example.org/a/a1/en"
    unsub = got[tokens.UNSUBSCRIBE_URL]
    assert unsub.startswith("https://alerts.example.org/u/")
    assert links.read_token(SECRET, "unsubscribe", unsub.rsplit("/", 1)[1]).person == "7" * 32
    headers = links.list_unsubscribe_headers(cfg, unsub)
    assert headers["List-Unsubscribe"] == f"<{unsub}>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_member_links_without_server_fall_back_to_mailto(project: Path) -> None:
    (project / "newsletter.toml").write_text(
        '[sender]\nunsubscribe_mailto = "baja@example.org"\nlanguage_mailto = "lista@example.org"\n'
    )
    cfg = load_config(project / "newsletter.toml")
    got = links.member_links(
        cfg,
        alert_id="a1",
        lang="es",
        person=None,
        subject="Acción ya",
        forward_body="Lee esto: ñ & más",
        language_subject="English please",
        unsubscribe_subject="Baja",
    )
    fwd = urlparse(got[tokens.FORWARD_URL])
    assert fwd.scheme == "mailto"
    assert parse_qs(fwd.query) == {"subject": ["Acción ya"], "body": ["Lee esto: ñ & más"]}
    assert got[tokens.LANGUAGE_URL].startswith("mailto:lista@example.org?subject=English")
    assert got[tokens.UNSUBSCRIBE_URL].startswith("mailto:baja@example.org?")
    assert got[tokens.VIEW_URL] == ""
    headers = links.list_unsubscribe_headers(cfg, got[tokens.UNSUBSCRIBE_URL])
    assert headers == {"List-Unsubscribe": "<mailto:baja@example.org?subject=unsubscribe>"}


def test_fill_escapes_html_and_does_not_reexpand() -> None:
    tpl = f'<p>{tokens.NAME}</p><a href="{tokens.FORWARD_URL}">x</a>'
    out = tokens.fill(
        tpl,
        {
            tokens.NAME: "<b>Ana</b> __NL_FORWARD_URL__",
            tokens.FORWARD_URL: "https://e.org/?a=1&b=2",
        },
        escape_html=True,
    )
    assert out == (
        '<p>&lt;b&gt;Ana&lt;/b&gt; __NL_FORWARD_URL__</p><a href="https://e.org/?a=1&amp;b=2">x</a>'
    )
    assert tokens.leftover(tokens.fill("__NL_FIELD_CITY__", {}, escape_html=False)) == []
