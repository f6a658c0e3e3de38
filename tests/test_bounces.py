"""Bounces, complaints and auto-replies: real messages read, classified, matched, acted on."""

from __future__ import annotations

import csv
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import journal as journal_module
from newsletter.bounces.classify import classify
from newsletter.bounces.commands import read_all
from newsletter.bounces.match import Matcher, verp_token
from newsletter.bounces.parse import parse
from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.contacts import Contacts
from newsletter.journal import Journal, timestamp
from newsletter.recipients import Recipient
from newsletter.suppressions import Suppressions
from tests.conftest import ALERT_ID, make_plan

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
SECRET = "test-secret-0123456789abcdef"
DOMAIN = "nalacc.example.org"


def expected_rows() -> list[dict[str, str]]:
    with (FIXTURES / "expected.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# --- parse + classify: every real message ------------------------------------------------------


@pytest.mark.parametrize("row", expected_rows(), ids=lambda r: r["file"])
def test_real_bounce_is_read_and_classified_as_expected(row):
    report = parse((FIXTURES / row["file"]).read_bytes())
    assert report.kind == row["kind"]
    got = []
    for f in report.failures:
        if report.kind == "complaint":
            c = "complaint"
        else:
            v = classify(f.status, f.diagnostic, f.temporary)
            c = v.kind + (f":{v.category}" if v.category else "")
        got.append(f"{f.address.lower() or '-'}={c}")
    assert " ".join(got) == row["failures"]


def test_the_fixture_set_covers_every_kind_and_format():
    rows = expected_rows()
    kinds = {r["kind"] for r in rows}
    assert kinds == {"dsn", "bounce", "delay", "complaint", "autoreply", "other"}
    classes = {f.split("=")[1].split(":")[0] for r in rows for f in r["failures"].split()}
    assert classes == {"hard", "soft", "sender", "complaint"}
    assert len(rows) >= 120


@pytest.mark.parametrize(
    "status, diagnostic, kind, category",
    [
        # Gmail (support.google.com/mail/answer/81126 wordings)
        (
            "5.1.1",
            "550-5.1.1 The email account that you tried to reach does not exist.",
            "hard",
            "",
        ),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled.", "hard", ""),
        ("5.2.2", "552-5.2.2 The email account that you tried to reach is over quota.", "soft", ""),
        (
            "5.7.26",
            "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender "
            "and Gmail users, and has been blocked. The sender must authenticate with at least "
            "one of SPF or DKIM.",
            "sender",
            "authentication",
        ),
        (
            "4.7.28",
            "421-4.7.28 Our system has detected an unusual rate of unsolicited mail",
            "sender",
            "rate",
        ),
        # Microsoft: Outlook.com and Office 365 (learn.microsoft.com NDR reference)
        (
            "5.7.515",
            "550 5.7.515 Access denied, sending domain example.org doesn't meet the "
            "required authentication level.",
            "sender",
            "authentication",
        ),
        (
            "5.7.1",
            "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please "
            "contact your Internet service provider since part of their network is on our block "
            "list (S3150).",
            "sender",
            "blocklist",
        ),
        (
            "5.1.10",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "hard",
            "",
        ),
        ("5.4.1", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "hard", ""),
        # Yahoo
        ("5.7.9", "554 5.7.9 Message not accepted for policy reasons.", "sender", "content"),
        ("", "554 delivery error: dd This user doesn't have a yahoo.com account", "hard", ""),
        # Blocklists, relays, greylisting
        (
            "5.7.1",
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "sender",
            "blocklist",
        ),
        ("5.7.1", "554 5.7.1 <x@example.org>: Relay access denied", "sender", "relay"),
        ("4.7.1", "450 4.7.1 Greylisted, please try again later", "soft", ""),
        ("4.4.7", "Delivery expired (message too old)", "soft", ""),
        ("5.0.0", "550 something nobody has seen before", "soft", ""),
    ],
)
def test_provider_wordings(status, diagnostic, kind, category):
    v = classify(status, diagnostic)
    assert (v.kind, v.category) == (kind, category)


def test_greylisting_is_soft_not_sender_even_with_policy_code():
    assert (
        classify("4.7.1", "451 4.7.1 Greylisting in action, please come back later").kind == "soft"
    )


# --- helpers: a state file with deliveries, and real bounces about them -----------------------


def people(*emails: str) -> list[Recipient]:
    return [Recipient(e, e.lower(), f"Name {i}", "es", {}, i + 2) for i, e in enumerate(emails)]


def delivered(j: Journal, alert: str, *emails: str) -> dict[str, str]:
    """The alert sent to these addresses, as a send records it; returns their Message-IDs."""
    make_plan(j, alert, people(*emails))
    t = timestamp()
    ids = {e: f"<{uuid.uuid4().hex}@{DOMAIN}>" for e in emails}
    j.apply_flight([(alert, e.lower(), "sent", 1, ids[e], "es", "250 OK", t, t) for e in emails])
    return ids


def hard_bounce(address: str, message_id: str | None, own: str = "f778c4a058120b20") -> bytes:
    """flufl/dsn_18 (OpenSMTPD, RFC 3464 with a text/rfc822-headers part), about `address`,
    returning our message's headers (as a real DSN does)."""
    raw = (FIXTURES / "flufl/dsn_18.txt").read_text()
    headers = f"From: NALACC <alerts@{DOMAIN}>\nTo: {address}\nSubject: Alerta\n"
    if message_id:
        headers += f"Message-ID: {message_id}\n"
    return (
        raw.replace("email@replaced.net", address)
        .replace("[ORIGINAL MESSAGE]", headers.rstrip("\n"))
        .replace("<f778c4a058120b20@", f"<{own}@")
        .encode()
    )


def soft_bounce(address: str, message_id: str, own: str) -> bytes:
    """sisimai/email-outlook-01 (Outlook.com DSN, 5.2.2 mailbox full) about `address`."""
    raw = (FIXTURES / "sisimai/email-outlook-01.eml").read_text()
    return (
        raw.replace("kijitora@example.jp", address)
        .replace("<BLU436-SMTP6645ECA6E7FEFFE86D040BBA770@phx.gbl>", message_id)
        .replace("<a0xtAEHLB0000d09e@", f"<{own}@")
        .encode()
    )


def sender_refusal(address: str, message_id: str) -> bytes:
    """sisimai/email-google-03 (Gmail: 554 5.7.0 header error: our message's fault)."""
    raw = (FIXTURES / "sisimai/email-google-03.eml").read_text()
    return (
        raw.replace("kijitora@example.co.jp", address)
        .replace("<CBA48452-0888-4AAC-AA4E-0F54D382117F@gmail.com>", message_id)
        .encode()
    )


def complaint(message_id: str, to: str) -> bytes:
    """sisimai/arf-03 (Terra's ARF abuse report) about our message."""
    raw = (FIXTURES / "sisimai/arf-03.eml").read_text()
    return (
        raw.replace("<f6fbba8a761ce682e1b00a323a21b372@example.net>", message_id)
        .replace('"undisclosed Terra recipient"', to)
        .encode()
    )


@pytest.fixture
def cfg(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    (project / "newsletter.toml").write_text(
        f'[sender]\nfrom = "NALACC <alerts@{DOMAIN}>"\n[bounces]\naddress = "bounces@{DOMAIN}"\n'
    )
    return load_config(project / "newsletter.toml")


def state(cfg) -> Journal:
    return Journal(cfg.path("state"), secret=cfg.secret)


# --- what bounces do -----------------------------------------------------------------------------


def test_hard_bounce_tied_by_message_id_suppresses_at_once(cfg):
    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org", "bob@example.org")
        s = read_all(cfg, j, [("m1", hard_bounce("ana@example.org", ids["ana@example.org"]))])
        sup = Suppressions(j).get("ana@example.org")
        assert not Suppressions(j).has("bob@example.org")
    assert s.events["hard"] == 1 and [d.email for d in s.suppressed] == ["ana@example.org"]
    assert sup.kind == "bounced" and "Domain does not exist" in sup.evidence
    assert "Message-ID" in sup.evidence and "alert a1" in sup.evidence


def test_reading_the_same_message_twice_changes_nothing(cfg):
    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org")
        msg = soft_bounce("ana@example.org", ids["ana@example.org"], "one")
        first = read_all(cfg, j, [("m", msg)])
        second = read_all(cfg, j, [("m again", msg)])
        n = j._read("SELECT count(*) FROM bounces")[0][0]
    assert first.events["soft"] == 1 and not second.events and second.already == 1
    assert n == 1


def test_soft_bounces_suppress_on_the_third_distinct_alert_within_soft_days(cfg):
    with state(cfg) as j:
        msgs = []
        for n, alert in enumerate(["a1", "a2", "a3"]):
            mid = delivered(j, alert, "ana@example.org")["ana@example.org"]
            msgs.append(soft_bounce("ana@example.org", mid, f"own{n}"))
        # Two bounces of the same alert count once.
        read_all(
            cfg,
            j,
            [
                ("1", msgs[0]),
                ("1b", soft_bounce("ana@example.org", j.rows("a1")[0].message_id, "own-again")),
            ],
        )
        read_all(cfg, j, [("2", msgs[1])])
        assert not Suppressions(j).has("ana@example.org")
        s = read_all(cfg, j, [("3", msgs[2])])
        assert Suppressions(j).get("ana@example.org").kind == "bounced"
    assert "3 soft bounces" in s.suppressed[0].reason


def test_soft_bounces_older_than_soft_days_do_not_count(cfg, monkeypatch):
    t = {"now": datetime(2026, 1, 1, tzinfo=UTC)}
    monkeypatch.setattr(journal_module, "now", lambda: t["now"])
    with state(cfg) as j:
        for n, alert in enumerate(["a1", "a2", "a3"]):
            mid = delivered(j, alert, "ana@example.org")["ana@example.org"]
            read_all(cfg, j, [(alert, soft_bounce("ana@example.org", mid, f"o{n}"))])
            t["now"] += timedelta(days=20)  # 0, 20, 40 days: never three within 30
        assert not Suppressions(j).has("ana@example.org")


def test_sender_side_refusal_never_suppresses_and_gives_advice(cfg):
    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org")
        s = read_all(cfg, j, [("g", sender_refusal("ana@example.org", ids["ana@example.org"]))])
        assert not Suppressions(j).has("ana@example.org")
    assert s.events["sender"] == 1 and not s.suppressed
    runner = CliRunner()
    path = Path("g.eml")
    path.write_bytes(
        sender_refusal("ana@example.org", ids["ana@example.org"]).replace(
            b"<000e0cd22984b69f4f0491be3d42@google.com>", b"<another@google.com>"
        )
    )
    out = runner.invoke(cli, ["bounces", "read", str(path)]).output
    assert "refused by example.org by policy" in out and "no member was suppressed" in out


def test_complaint_suppresses_at_once_and_replaces_an_unsubscribe(cfg):
    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org")
        Suppressions(j).add("ana@example.org", "unsubscribe page")
        s = read_all(cfg, j, [("arf", complaint(ids["ana@example.org"], "ana@example.org"))])
        sup = Suppressions(j).get("ana@example.org")
    assert s.events["complaint"] == 1
    assert sup.kind == "complained" and "complained" in sup.reason


def test_forged_bounce_by_address_alone_counts_only_after_the_limit(cfg):
    with state(cfg) as j:
        delivered(j, "a1", "ana@example.org")
        # A DSN naming a member but quoting no Message-ID of ours: anyone could write it.
        read_all(cfg, j, [("f1", hard_bounce("ana@example.org", None, "forged1"))])
        read_all(cfg, j, [("f2", hard_bounce("ana@example.org", None, "forged2"))])
        assert not Suppressions(j).has("ana@example.org")  # both on the same (last) alert
        delivered(j, "a2", "ana@example.org")
        s = read_all(cfg, j, [("f3", hard_bounce("ana@example.org", None, "forged3"))])
        assert Suppressions(j).get("ana@example.org").kind == "bounced"
    assert "address only" in s.suppressed[0].evidence


def test_unmatched_bounce_is_counted_and_listed_not_guessed(cfg):
    with state(cfg) as j:
        delivered(j, "a1", "ana@example.org")
        s = read_all(cfg, j, [("x.eml", hard_bounce("stranger@example.net", "<nope@x>"))])
        assert Suppressions(j).keys() == set()
        stored = j._read("SELECT key, matched_by FROM bounces")
    assert [u[:2] for u in s.unmatched] == [("x.eml", "stranger@example.net")]
    assert stored == [("", "none")]  # no address kept of someone who is no member


def test_auto_reply_and_personal_mail_change_nothing(cfg):
    personal = (
        b"From: Rosa <rosa@example.org>\nTo: bounces@nalacc.example.org\nSubject: hola\n\nGracias\n"
    )
    with state(cfg) as j:
        delivered(j, "a1", "fred@example.com")
        s = read_all(
            cfg,
            j,
            [
                ("ooo", (FIXTURES / "sisimai/rfc3834-01.eml").read_bytes()),
                ("qmail-auto", (FIXTURES / "flufl/qmail_08.txt").read_bytes()),
                ("me", personal),
            ],
        )
        assert j._read("SELECT count(*) FROM bounces")[0][0] == 0
    assert s.kinds["autoreply"] == 2 and s.kinds["other"] == 1
    assert s.done == ["ooo", "qmail-auto"]  # the personal one is not "processed"


def test_message_id_in_a_base64_attachment_is_found(cfg):
    """Identifiers in an attachment: the returned message as an attached .eml, base64."""
    import base64

    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org")
        original = f"From: NALACC <alerts@{DOMAIN}>\r\nMessage-ID: {ids['ana@example.org']}\r\n\r\nHola\r\n"
        body = base64.encodebytes(original.encode()).decode()
        msg = (
            "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
            "To: bounces@nalacc.example.org\nSubject: Undeliverable: Alerta\n"
            "Message-ID: <att1@mx.example.org>\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n'
            "Delivery has failed to these recipients:\n\nana@example.org\n"
            "550 5.1.1 User unknown\n\n--b\nContent-Type: application/octet-stream; name=orig.eml\n"
            "Content-Disposition: attachment; filename=orig.eml\nContent-Transfer-Encoding: base64\n\n"
            f"{body}\n--b--\n"
        ).encode()
        assert ids["ana@example.org"] in parse(msg).message_ids
        s = read_all(cfg, j, [("att", msg)])
        assert Suppressions(j).get("ana@example.org").kind == "bounced"
    assert "Message-ID" in s.suppressed[0].evidence


# --- VERP --------------------------------------------------------------------------------------


def test_verp_token_ties_a_bounce_with_nothing_else_in_it(cfg):
    with state(cfg) as j:
        delivered(j, "a1", "ana@example.org")
        contact = Contacts(j).find("ana@example.org")
        token = verp_token(SECRET, contact.public_id, "a1")
        assert len(token) == 19 and token.startswith(contact.public_id[:10])
        # A bounce that names nobody readable and quotes nothing: only the address it came to.
        msg = (
            f"Return-Path: <>\nDelivered-To: bounces+{token.upper()}@{DOMAIN}\n"
            "From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n"
            "Message-ID: <v1@mx.example.net>\n\nSorry, no mailbox here by that name. (#5.1.1)\n"
        ).encode()
        s = read_all(cfg, j, [("v", msg)])
        assert Suppressions(j).get("ana@example.org").kind == "bounced"
    assert "VERP" in s.suppressed[0].evidence


def test_a_forged_verp_token_is_not_believed(cfg):
    with state(cfg) as j:
        delivered(j, "a1", "ana@example.org")
        contact = Contacts(j).find("ana@example.org")
        good = verp_token(SECRET, contact.public_id, "a1")
        forged = good[:-1] + ("a" if good[-1] != "a" else "b")
        m = Matcher(j, cfg)
        assert m.by_verp([("bounces", good, DOMAIN)]).contact_id == contact.id
        assert m.by_verp([("bounces", forged, DOMAIN)]) is None
        assert m.by_verp([("someone", good, DOMAIN)]) is None  # not our bounce address


def test_verp_envelope_sender_on_the_wire(project, smtp_server, monkeypatch):
    _send_setup(project, smtp_server, monkeypatch, 'address = "bounces@nalacc.test"\nverp = true\n')
    result = CliRunner().invoke(cli, ["send", f"alerts/{ALERT_ID}", "--to", "members.csv", "--yes"])
    assert result.exit_code == 0, result.output
    smtp_server.wait_for(3)
    mail_from = smtp_server.to("ana@example.org")[0].mail_from
    with Journal("newsletter.db") as j:
        pid = Contacts(j).find("ana@example.org").public_id
    assert mail_from == f"bounces+{verp_token(SECRET, pid, ALERT_ID)}@nalacc.test"
    assert smtp_server.to("bob@example.org")[0].mail_from != mail_from  # each their own


# --- send time, and the whole loop ---------------------------------------------------------------


def _send_setup(project, smtp_server, monkeypatch, bounces: str = "") -> None:
    """test_send's project (placeholders filled, the test server) with three members."""
    from tests.test_send import setup_project

    members = "email,name\nana@example.org,Ana\nbob@example.org,Bob\ncarla@example.org,Carla\n"
    setup_project(project, monkeypatch, smtp_server, csv=members)
    if bounces:
        with (project / "newsletter.toml").open("a") as f:
            f.write(f"[bounces]\n{bounces}")


def test_send_time_user_unknown_suppresses_for_the_next_alert_and_a_block_does_not(
    project, smtp_server, monkeypatch
):
    _send_setup(project, smtp_server, monkeypatch)
    refusals = {
        "bob@example.org": "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown",
        "carla@example.org": "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked "
        "using zen.spamhaus.org",
    }
    smtp_server.on_rcpt = lambda a: refusals.get(a)
    runner = CliRunner()
    result = runner.invoke(cli, ["send", f"alerts/{ALERT_ID}", "--to", "members.csv", "--yes"])
    assert result.exit_code == 1  # two failed
    assert "suppressed for next time 1" in result.output
    with Journal("newsletter.db") as j:
        assert Suppressions(j).get("bob@example.org").kind == "bounced"
        assert "5.1.1" in Suppressions(j).get("bob@example.org").evidence
        assert not Suppressions(j).has("carla@example.org")
    status = runner.invoke(cli, ["status", f"alerts/{ALERT_ID}"]).output
    assert "1 bounced (1 hard, 0 soft)" in status and "1 refused for the sender's reasons" in status
    assert "blocklisting or reputation" in status


def test_dead_address_is_not_mailed_after_its_bounce_is_read(project, smtp_server, monkeypatch):
    """The issue's "done when": send, the bounce arrives later, the next alert skips her."""
    import shutil

    _send_setup(project, smtp_server, monkeypatch)
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["send", f"alerts/{ALERT_ID}", "--to", "members.csv", "--yes"]).exit_code
        == 0
    )
    sent = smtp_server.to("ana@example.org")[0].message
    maildir = Path("Maildir")
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1.eml").write_bytes(hard_bounce("ana@example.org", sent["Message-ID"]))
    out = runner.invoke(cli, ["bounces", "read", str(maildir)])
    assert out.exit_code == 0, out.output
    assert "Suppressed 1 address" in out.output and "ana@example.org" in out.output
    shutil.copytree(f"alerts/{ALERT_ID}", "alerts/next-alert")
    before = len(smtp_server.received)
    assert (
        runner.invoke(cli, ["send", "alerts/next-alert", "--to", "members.csv", "--yes"]).exit_code
        == 0
    )
    got = [r.rcpt_tos[0] for r in smtp_server.wait_for(before + 2)[before:]]
    assert sorted(got) == ["bob@example.org", "carla@example.org"]


def test_read_from_stdin_and_from_an_mbox(cfg):
    with state(cfg) as j:
        ids = delivered(j, "a1", "ana@example.org", "bob@example.org")
    one = hard_bounce("ana@example.org", ids["ana@example.org"], "s1")
    two = soft_bounce("bob@example.org", ids["bob@example.org"], "s2")
    mbox = b"".join(
        b"From MAILER-DAEMON Thu Nov 22 17:56:08 2018\n"
        + m.replace(b"\nFrom ", b"\n>From ")
        + b"\n"
        for m in (one, two)
    )
    Path("box.mbox").write_bytes(mbox)
    runner = CliRunner()
    out = runner.invoke(cli, ["bounces", "read", "box.mbox"]).output
    assert "Read 2 messages: 2 bounces" in out and "New: 1 hard, 1 soft" in out
    again = runner.invoke(cli, ["bounces", "read", "-"], input=mbox).output
    assert "Read 2 messages" in again and "2 read before (nothing changed)" in again


def test_status_rates_and_warnings(cfg):
    runner = CliRunner()
    with state(cfg) as j:
        emails = [f"m{i}@example.org" for i in range(200)]
        ids = delivered(j, ALERT_ID, *emails)
        msgs = [(f"c{i}", complaint(ids[e], e)) for i, e in enumerate(emails[:1])]
        read_all(cfg, j, msgs)
    out = runner.invoke(cli, ["status", f"alerts/{ALERT_ID}"]).output
    assert "1 complaint" in out and "complaints 0.50 %" in out.replace("0.50%", "0.50 %")
    assert "WARNING: complaints at 0.50% reach Gmail's 0.3 % line" in out
    with state(cfg) as j:
        read_all(
            cfg, j, [(f"h{i}", hard_bounce(e, ids[e], f"h{i}")) for i, e in enumerate(emails[1:6])]
        )
    out = runner.invoke(cli, ["status", f"alerts/{ALERT_ID}"]).output
    assert "5 bounced (5 hard, 0 soft)" in out and "hard bounces at 2.50% passed 2 %" in out


# --- the state file ------------------------------------------------------------------------------


def test_a_version_1_state_file_is_upgraded_in_place_keeping_its_data(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(journal_module._SCHEMA)
    con.execute("INSERT INTO meta VALUES ('ip_salt', 'x')")
    t = timestamp()
    con.execute(
        "INSERT INTO suppressions VALUES ('a@example.org', 'a@example.org', 'one-click', ?)", (t,)
    )
    con.execute(
        "INSERT INTO suppressions VALUES ('b@example.org', 'b@example.org', "
        "'by hand (newsletter suppress)', ?)",
        (t,),
    )
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    with Journal(path) as j:
        assert j._read("PRAGMA user_version")[0][0] == journal_module.SCHEMA_VERSION
        assert Suppressions(j).get("a@example.org").kind == "unsubscribed"
        assert Suppressions(j).get("b@example.org").kind == "suppressed"
        assert Suppressions(j).get("b@example.org").created_at == t
        assert j._read("SELECT count(*) FROM bounces")[0][0] == 0


# --- recipients export / check ----------------------------------------------------------------------


def test_recipients_export_and_check(cfg):
    with state(cfg) as j:
        ids = delivered(
            j, "a1", "ana@example.org", "bob@example.org", "carla@example.org", "=x@example.org"
        )
        Suppressions(j).add("carla@example.org", "unsubscribe page")
        Suppressions(j).add_many([("dan@example.org", "imported from old.csv")], kind="suppressed")
        read_all(cfg, j, [("b", hard_bounce("bob@example.org", ids["bob@example.org"]))])
        read_all(cfg, j, [("c", complaint(ids["ana@example.org"], "ana@example.org"))])
    runner = CliRunner()
    out = runner.invoke(cli, ["recipients", "export", "--out", "people.csv"])
    assert out.exit_code == 0, out.output
    with Path("people.csv").open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:6] == ["email", "name", "language", "status", "reason", "since"]
    status = {r["email"]: r["status"] for r in rows}
    assert status == {
        "ana@example.org": "complained",
        "bob@example.org": "bounced",
        "carla@example.org": "unsubscribed",
        "dan@example.org": "suppressed",
        "'=x@example.org": "active",  # a spreadsheet would run it as a formula
    }
    bob = next(r for r in rows if r["email"] == "bob@example.org")
    assert "Domain does not exist" in bob["reason"] and bob["language"] == "es"
    Path("list.csv").write_text("email\nana@example.org\nbob@example.org\nnew@example.org\n")
    check = runner.invoke(cli, ["recipients", "check", "list.csv"])
    assert check.exit_code == 0, check.output
    assert "list.csv:2: ana@example.org: complained since" in check.output
    assert "list.csv:3: bob@example.org: bounced since" in check.output
    assert "new@example.org" not in check.output.split("\n", 1)[1]


def test_forged_reports_about_a_member_never_mailed_change_nothing(cfg):
    # Reports tied by the address alone name no alert when the member was never sent one: they
    # cannot be "on distinct alerts", so however many arrive (bounces or complaints), none counts.
    with state(cfg) as j:
        Contacts(j).add("ana@example.org", "Ana")
        for n in range(3):
            read_all(cfg, j, [(f"f{n}", hard_bounce("ana@example.org", None, f"forged{n}"))])
        read_all(cfg, j, [("c", complaint("<not-ours@example.net>", "ana@example.org"))])
        assert not Suppressions(j).has("ana@example.org")
