"""Web subscribers' state on a real SQLite file: caps, confirmation, consent record, the list."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from newsletter import journal, links, subscribers
from newsletter.config import load_config
from newsletter.contacts import Contacts
from newsletter.journal import Journal
from newsletter.subscribers import SignUp
from newsletter.suppressions import Suppressions

SECRET = "test-secret-not-for-production-0123"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
def j(tmp_path):
    with Journal(tmp_path / "state.db", secret=SECRET) as jr:
        yield jr


@pytest.fixture
def cfg(demo, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return load_config()


def ask(j, address="ana@example.org", ip="203.0.113.7", per_network=20, when=T0):
    return subscribers.request_confirmation(j, address, ip, per_network, when)


def signup(email="ana@example.org", when=T0, lang="es", source="form", name="Ana"):
    return SignUp(email, name, lang, source, when.timestamp())


def wording(cfg, lang="es"):
    return subscribers.consent(cfg, lang)


# --- schema -----------------------------------------------------------------------------------


def test_a_version_1_file_is_upgraded_in_place_keeping_its_data(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(journal._SCHEMA)
    db.execute("INSERT INTO meta VALUES ('ip_salt', 'x')")
    db.execute(
        "INSERT INTO contacts (key, email, name, created_at, updated_at) "
        "VALUES ('ana@example.org', 'ana@example.org', 'Ana', 't', 't')"
    )
    db.execute("INSERT INTO suppressions VALUES ('beto@example.org', 'beto@example.org', '', 't')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Journal(path) as j:
        assert Contacts(j).find("ana@example.org").name == "Ana"
        assert Suppressions(j).has("beto@example.org")
        assert j._read("PRAGMA user_version")[0][0] == journal.SCHEMA_VERSION >= 2
        assert j._read("SELECT count(*) FROM subscribers") == [(0,)]


# --- caps -------------------------------------------------------------------------------------


def test_one_confirmation_per_address_per_24_hours(j):
    assert ask(j)
    assert not ask(j, when=T0 + timedelta(hours=23, minutes=59))
    assert not ask(j, "ANA@example.org ", when=T0 + timedelta(hours=1))  # any case
    assert ask(j, when=T0 + timedelta(hours=24, seconds=1))


def test_a_cap_per_network_per_hour(j):
    for i in range(3):
        assert ask(j, f"p{i}@example.org", ip=f"203.0.113.{i + 1}", per_network=3)
    # The same /24 from another address of it: over the cap; another network is not.
    assert not ask(j, "p3@example.org", ip="203.0.113.200", per_network=3)
    assert ask(j, "p4@example.org", ip="198.51.100.1", per_network=3)
    # An hour later the network may ask again; p3 was not mailed, so p3 may too.
    assert ask(
        j,
        "p3@example.org",
        ip="203.0.113.9",
        per_network=3,
        when=T0 + timedelta(hours=1, seconds=1),
    )


def test_ipv6_counts_by_56(j):
    assert ask(j, "a@example.org", ip="2001:db8:0:1::1", per_network=1)
    assert not ask(j, "b@example.org", ip="2001:db8:0:ff::2", per_network=1)
    assert ask(j, "c@example.org", ip="2001:db8:0:100::2", per_network=1)


def test_bounced_and_complained_get_no_confirmation_unsubscribed_do(j):
    Suppressions(j).add("bounced@example.org", "bounced: 550 5.1.1 no such user")
    Suppressions(j).add("complained@example.org", "complained (ARF report)")
    Suppressions(j).add("left@example.org", "unsubscribe page")
    assert not ask(j, "bounced@example.org")
    assert not ask(j, "complained@example.org", ip="198.51.100.1")
    assert ask(j, "left@example.org", ip="192.0.2.1")


def test_the_suppressions_kind_decides_not_its_wording(j):
    # Bounce handling records a kind; its reason text need not say "bounce".
    Suppressions(j).add("gone@example.org", "address gone (1 hard bounc3)", kind="bounced")
    Suppressions(j).add("spam@example.org", "ARF abuse report", kind="complained")
    assert not ask(j, "gone@example.org")
    assert not ask(j, "spam@example.org", ip="198.51.100.1")


def test_every_request_writes_the_same_rows_and_no_address_or_ip(j):
    """What a request writes does not depend on the address's state (the timing follows)."""
    Suppressions(j).add("bounced@example.org", "bounced")
    before = j._read("SELECT count(*) FROM signup_caps")[0][0]
    for address in ("new@example.org", "new@example.org", "bounced@example.org"):
        ask(j, address)
        now = j._read("SELECT count(*) FROM signup_caps")[0][0]
        assert now - before == 2
        before = now
    dump = "\n".join(j._db.iterdump())
    assert "new@example.org" not in dump and "203.0.113" not in dump


def test_caps_rows_are_erased_after_their_window(j):
    ask(j, "a@example.org")
    ask(j, "b@example.org", when=T0 + timedelta(hours=2))  # the first network row is gone
    rows = j._read("SELECT kind, created_at FROM signup_caps ORDER BY created_at")
    assert [k for k, _ in rows] == ["address", "address", "network"]
    ask(j, "c@example.org", when=T0 + timedelta(hours=30))
    assert len(j._read("SELECT 1 FROM signup_caps")) == 2  # only c's own


# --- the confirmation link ----------------------------------------------------------------------


def test_confirm_token_round_trip_expiry_and_tamper():
    s = signup(name="Ana Pérez")
    tok = subscribers.make_confirm_token(SECRET, s, T0.timestamp())
    back = subscribers.read_confirm_token(SECRET, tok, T0.timestamp() + 6 * 86400)
    assert back == s
    with pytest.raises(links.BadToken) as err:
        subscribers.read_confirm_token(SECRET, tok, T0.timestamp() + 7 * 86400 + 1)
    assert err.value.reason == "expired"
    for bad in (tok[:-2] + "xx", "nonsense", tok.replace(".", "", 1)):
        with pytest.raises(links.BadToken):
            subscribers.read_confirm_token(SECRET, bad, T0.timestamp())
    with pytest.raises(links.BadToken):  # another secret's link
        subscribers.read_confirm_token("another-secret-0123456789", tok, T0.timestamp())
    # A link of another purpose (an unsubscribe token) is not a confirmation.
    with pytest.raises(links.BadToken):
        subscribers.read_confirm_token(
            SECRET, links.make_token(SECRET, "unsubscribe", 1, "a", "es"), T0.timestamp()
        )


def test_a_confirm_token_dated_in_the_future_is_refused():
    # Signed while the server's clock ran an hour ahead (then corrected), a link would have
    # lived 7 days and an hour; links.read_token refuses such tokens (issue 8), this did not.
    tok = subscribers.make_confirm_token(SECRET, signup(), T0.timestamp() + 3600)
    with pytest.raises(links.BadToken) as err:
        subscribers.read_confirm_token(SECRET, tok, T0.timestamp())
    assert err.value.reason == "invalid"
    ok = subscribers.make_confirm_token(SECRET, signup(), T0.timestamp() + links.CLOCK_SKEW)
    assert subscribers.read_confirm_token(SECRET, ok, T0.timestamp()).email == "ana@example.org"


# --- confirmation and the consent record ---------------------------------------------------------


def test_confirm_records_the_consent_and_joins_the_list(j, cfg):
    c = wording(cfg)
    who = subscribers.confirm(j, signup(source="forward"), c, T0 + timedelta(minutes=5))
    assert who is not None and who.lang == "es" and who.name == "Ana"
    rec = subscribers.subscriber(j, "ANA@example.org")
    assert rec.source == "forward" and rec.language == "es"
    assert rec.requested_at.startswith("2026-11-30T12:00:00")
    assert rec.confirmed_at.startswith("2026-11-30T12:05:00")
    assert rec.consent_text == c.text and "Puedo cancelar la suscripción" in c.text
    assert rec.consent_version == c.version != wording(cfg, "en").version
    assert Contacts(j).find("ana@example.org").language_pref == "es"
    [r] = subscribers.web_recipients(j)
    assert (r.email, r.name, r.language) == ("ana@example.org", "Ana", "es")


def test_unsubscribed_may_subscribe_again_but_not_with_an_older_link(j, cfg, monkeypatch):
    old = signup(when=T0)
    assert subscribers.confirm(j, old, wording(cfg), T0 + timedelta(minutes=1))
    monkeypatch.setattr(journal, "now", lambda: T0 + timedelta(days=1))
    Suppressions(j).add("ana@example.org", "unsubscribe page")
    assert subscribers.web_recipients(j) == []
    # The first link again (still within its 7 days): the later "no" stands.
    assert subscribers.confirm(j, old, wording(cfg), T0 + timedelta(days=2)) is None
    assert Suppressions(j).has("ana@example.org")
    # A new sign-up, confirmed: back on the list, the consent is the new one.
    new = signup(when=T0 + timedelta(days=3), lang="en")
    assert subscribers.confirm(j, new, wording(cfg, "en"), T0 + timedelta(days=3, minutes=2))
    assert not Suppressions(j).has("ana@example.org")
    assert subscribers.subscriber(j, "ana@example.org").language == "en"
    assert [r.language for r in subscribers.web_recipients(j)] == ["en"]


def test_a_send_adds_the_web_subscribers_after_its_list_as_web_recipients_read_them(j, cfg):
    """RunList.add_web_subscribers (one SQL statement, for a send) adds what web_recipients
    returns, in its order (the oldest confirmation first), after the CSV's rows; a suppressed
    subscriber is left out, a language chosen since wins."""
    from newsletter.recipients import Recipient

    for minute, (address, lang) in enumerate(
        [("zoe@example.org", "en"), ("ana@example.org", "es"), ("gone@example.org", "es")]
    ):
        subscribers.confirm(
            j, signup(address, lang=lang, name=address[:3]), wording(cfg, lang),
            T0 + timedelta(minutes=10 - minute),
        )
    Suppressions(j).add("gone@example.org", "unsubscribe page")
    Contacts(j).set_language(Contacts(j).find("zoe@example.org").id, "es")
    listed = j.run_list()
    listed.add([Recipient("bob@example.com", "bob@example.com", "Bob", "en", {}, 2)])
    assert listed.add_web_subscribers() == 2
    rows = j._read("SELECT seq, line, email, name, lang, fields, web FROM temp.run ORDER BY seq")
    assert rows == [
        (0, 2, "bob@example.com", "Bob", "en", "", 0),
        (1, 0, "ana@example.org", "ana", "es", "", 1),
        (2, 0, "zoe@example.org", "zoe", "es", "", 1),
    ]
    assert [(r.email, r.language) for r in subscribers.web_recipients(j)] == [
        (email, lang) for _, _, email, _, lang, _, _ in rows[1:]
    ]


def test_bounced_since_the_request_is_not_confirmed(j, cfg):
    Suppressions(j).add("ana@example.org", "bounced")
    assert subscribers.confirm(j, signup(when=T0 + timedelta(days=1)), wording(cfg), T0) is None
    assert subscribers.subscriber(j, "ana@example.org") is None


# --- the emails -----------------------------------------------------------------------------------


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def test_confirmation_email_in_spanish_with_the_link_and_postal_address(cfg):
    url = "https://alerts.example.org/c/TOKEN"
    msg = parse(subscribers.confirmation_message(cfg, signup(), url))
    assert msg["Subject"] == "Confirme su suscripción a las alertas de acción de NALACC"
    assert msg["From"] == cfg.sender.from_ and msg["To"] == "ana@example.org"
    assert "List-Unsubscribe" not in msg  # not on the list yet
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    assert '<html lang="es"' in html and f'href="{url}"' in html and url in text
    assert "7 días" in text and cfg.sender.postal_address in text
    assert "Confirmar mi suscripción" in html and "__NL_" not in html + text


def test_the_confirmation_email_carries_no_text_a_stranger_typed(cfg):
    # Anyone can type any address and name into the form: the name must not ride to that
    # mailbox in our email (the To: line most clients show), or the form mails a stranger's
    # words from the organisation's domain (spam or a phishing line such as this one).
    bait = "Your account is locked: visit evil.example.net"
    msg = parse(subscribers.confirmation_message(cfg, signup(name=bait), "https://x/c/T"))
    assert msg["To"] == "ana@example.org"
    raw = msg.as_string()
    assert "evil.example" not in raw and "locked" not in raw


def test_welcome_email_is_a_members_message(cfg):
    who = subscribers.Confirmed(3, "0" * 32, "ana@example.org", "Ana", "en")
    url = "https://alerts.example.org/u/TOKEN"
    msg = parse(subscribers.welcome_message(cfg, who, {"__NL_UNSUBSCRIBE_URL__": url}))
    assert msg["Subject"] == "Welcome to the NALACC action alerts"
    assert msg["List-Unsubscribe"].startswith(f"<{url}>")
    text = msg.get_body(("plain",)).get_content()
    assert "Dear Ana," in text and f"Unsubscribe: {url}" in text


# --- into the send --------------------------------------------------------------------------------


def test_send_includes_confirmed_web_subscribers_not_in_the_csv(project, monkeypatch, smtp_server):
    from tests.test_send import send, setup_project

    setup_project(project, monkeypatch, smtp_server)
    cfg = load_config()
    with Journal(cfg.path("state"), secret=SECRET) as jr:
        c = subscribers.consent(cfg, "es")
        for address, lang in (("luz@example.org", "es"), ("max@example.org", "en")):
            assert subscribers.confirm(jr, signup(address, lang=lang, name="Web"), c, T0)
        # In the CSV too: sent once, as the CSV's row. Unsubscribed since: not sent.
        assert subscribers.confirm(jr, signup("bob@example.com", name="Bobby"), c, T0)
        assert subscribers.confirm(jr, signup("left@example.org"), c, T0)
        Suppressions(jr).add("left@example.org", "unsubscribe page")

    only = send("--csv-only", "--yes")
    assert only.exit_code == 0, only.output
    assert "--csv-only: 2 who subscribed on the web left out." in only.output
    assert smtp_server.to("luz@example.org") == []

    # The same alert again: the CSV's members were sent; the web's two are added now.
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert "5 from members.csv + 2 who subscribed on the web" in result.output
    [luz] = [r.message for r in smtp_server.to("luz@example.org")]
    assert '<html lang="es"' in luz.get_body(("html",)).get_content()
    [mx] = [r.message for r in smtp_server.to("max@example.org")]
    assert mx["Subject"].startswith("Action alert")
    assert len(smtp_server.to("bob@example.com")) == 1  # the --csv-only run; not twice
    assert smtp_server.to("left@example.org") == []


# --- newsletter recipients export ---------------------------------------------------------------


def test_recipients_export_lists_everyone_with_status_reason_since_and_source(
    project, monkeypatch, smtp_server
):
    import csv

    from click.testing import CliRunner

    from newsletter.cli import cli
    from tests.test_send import send, setup_project

    setup_project(project, monkeypatch, smtp_server)  # gone@ suppressed ("unsubscribed")
    cfg = load_config()
    assert send("--yes").exit_code == 0
    with Journal(cfg.path("state"), secret=SECRET) as jr:
        c = subscribers.consent(cfg, "en")
        assert subscribers.confirm(jr, signup("luz@example.org", lang="en", source="embed"), c, T0)
        Suppressions(jr).add("bob@example.com", "bounced: 550 5.1.1", kind="bounced")
        Suppressions(jr).add("old@example.org", "imported from old.csv")
        Contacts(jr).set_language(Contacts(jr).find("jose@example.org").id, "en")
        Contacts(jr).add("mallory@example.org", '=HYPERLINK("http://evil.example")')

    result = CliRunner().invoke(cli, ["recipients", "export", "--out", "people.csv"])
    assert result.exit_code == 0, result.output
    raw = (project / "people.csv").read_bytes()
    assert raw.startswith("\ufeff".encode())
    table = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    by = {r["email"]: r for r in table}
    assert list(table[0]) == ["email", "name", "language", "status", "reason", "since", "source"]
    assert by["luz@example.org"] | {"since": ""} == {
        "email": "luz@example.org",
        "name": "Ana",
        "language": "en",
        "status": "active",
        "reason": "",
        "since": "",
        "source": "embed",
    }
    assert by["luz@example.org"]["since"] == "2026-11-30T12:00:00Z"
    assert (by["ana@example.org"]["status"], by["ana@example.org"]["source"]) == (
        "active",
        "list",
    )
    assert by["ana@example.org"]["language"] == "es"
    assert by["jose@example.org"]["language"] == "en"  # their choice over the list's
    assert (by["bob@example.com"]["status"], by["bob@example.com"]["reason"]) == (
        "bounced",
        "bounced: 550 5.1.1",
    )
    assert by["gone@example.org"]["status"] == "unsubscribed"
    assert by["old@example.org"]["source"] == "suppression"
    assert by["mallory@example.org"]["name"].startswith("'=")  # not a formula in a spreadsheet
    assert "people" in result.output and "1 bounced" in result.output

    # To standard output, the same rows.
    out = CliRunner().invoke(cli, ["recipients", "export"])
    assert out.exit_code == 0 and len(out.output.strip().splitlines()) == len(table) + 1
