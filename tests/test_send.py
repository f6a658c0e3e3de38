"""`newsletter send` against a real SMTP server on 127.0.0.1: everyone once, faults, resume."""

from __future__ import annotations

import asyncio
import email.utils
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import campaign, deliver
from newsletter.cli import cli
from newsletter.config import load_config
from newsletter.contacts import Contacts
from newsletter.errors import NewsletterError
from newsletter.journal import Journal
from newsletter.suppressions import Suppressions
from tests.conftest import ALERT_ID, fill_placeholders, make_plan

ALERT = f"alerts/{ALERT_ID}"
SECRET = "test-secret-0123456789abcdef"

# Two languages, accents, a CR/LF name, bad addresses (one with a language without an edition),
# a duplicate, a row that will be suppressed.
CSV = (
    "Email;Name;Language;City\n"
    "ana@example.org;Ana Lucía Pérez;es;Chicago\n"
    "bob@example.com;Bob Smith;en;Boston\n"
    'eve@example.net;"Eve\r\nBcc: x@evil.example";en;Nowhere\n'
    "not-an-address;Nobody;es;\n"
    "zoe(at)example.org;Zoë;fr;Paris\n"
    "ANA@example.org;Ana again;es;Chicago\n"
    "gone@example.org;Gone Away;es;Miami\n"
    "jose@example.org;José Ñúñez;;Houston\n"
)
VALID = ["ana@example.org", "bob@example.com", "eve@example.net", "jose@example.org"]


class FakeClock(campaign.Clock):
    """Backoff and the rate cap advance this clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()
        super().__init__(monotonic=lambda: self.now, sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(seconds, 0.0)


def setup_project(project: Path, monkeypatch, server=None, csv: str = CSV, **smtp) -> Path:
    """newsletter.toml for the test server, the recipient CSV, the token secret; returns the CSV."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    lines = [
        "[sender]",
        'from = "NALACC Alertas <alerts@nalacc.test>"',
        'reply_to = "info@nalacc.test"',
        'postal_address = "NALACC, 1638 S Blue Island Ave, Chicago, IL 60608"',
        "[web]",
        'base_url = "https://alerts.nalacc.test"',
    ]
    fill_placeholders(project)  # a real send stops on example.org values
    if server is not None:
        smtp = {"host": server.host, "port": server.port, "security": "none", "timeout": 2} | smtp
    if smtp:
        lines.append("[smtp]")
        for key, value in smtp.items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    (project / "newsletter.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = project / "members.csv"
    path.write_text(csv, encoding="utf-8")
    with Journal(project / "newsletter.db") as j:
        Suppressions(j).add("Gone@Example.org", "unsubscribed")
    return path


def send(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["send", ALERT, "--to", "members.csv", *args], input=input)


def run(clock: campaign.Clock | None = None, **options):
    """run_send directly (to pass a fake clock), as the CLI would."""
    return campaign.run_send(
        load_config(), Path(ALERT), Path("members.csv"), yes=True, clock=clock, **options
    )


def received_by(server) -> Counter:
    return Counter(a.lower() for r in server.received for a in r.rcpt_tos)


def states(project: Path) -> dict[str, str]:
    with Journal(project / "newsletter.db") as j:
        return j.states(ALERT_ID)


def sent(project: Path) -> set[str]:
    """Who the state file says was sent the alert (the outcome counts them only)."""
    return {k for k, s in states(project).items() if s == "sent"}


def test_everyone_once_in_their_language_with_their_name(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == Counter(VALID)
    assert "invalid rows 2, duplicates 1" in result.output
    assert "suppressed 1" in result.output and "sent 4" in result.output

    by = {r.rcpt_tos[0]: r.message for r in smtp_server.received}
    assert "Hola, Ana Lucía Pérez" in by["ana@example.org"].get_body(("plain",)).get_content()
    assert "Ana Lucía Pérez" in by["ana@example.org"].get_body(("html",)).get_content()
    assert "Bob Smith" in by["bob@example.com"].get_body(("plain",)).get_content()
    # The journal has no preference for José and the CSV column is empty: the default, es.
    es_subject, en_subject = by["jose@example.org"]["Subject"], by["bob@example.com"]["Subject"]
    assert es_subject != en_subject
    assert by["ana@example.org"]["Subject"] == es_subject
    assert by["eve@example.net"]["Subject"] == en_subject
    assert set(states(project).values()) == {"sent"}

    again = send("--yes")
    assert again.exit_code == 0, again.output
    assert "skipped 4 (already sent)" in again.output
    assert received_by(smtp_server) == Counter(VALID)


def test_language_preference_from_the_journal_wins_over_the_csv(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    with Journal(project / "newsletter.db") as j:
        Contacts(j).set_language(Contacts(j).add("ana@example.org"), "en")
    assert send("--yes").exit_code == 0
    by = {r.rcpt_tos[0]: r.message for r in smtp_server.received}
    assert by["ana@example.org"]["Subject"] == by["bob@example.com"]["Subject"]
    assert "Ana Lucía Pérez" in by["ana@example.org"].get_body(("plain",)).get_content()


def test_headers_well_formed_and_a_crlf_name_adds_nothing(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    assert send("--yes").exit_code == 0
    ids = set()
    for rec in smtp_server.received:
        assert len(rec.rcpt_tos) == 1
        assert rec.mail_from == "alerts@nalacc.test"
        m = rec.message
        for name in (
            "From",
            "To",
            "Subject",
            "Date",
            "Message-ID",
            "Reply-To",
            "List-Id",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "MIME-Version",
        ):
            assert m[name], f"{name} missing for {rec.rcpt_tos}"
        assert m["Bcc"] is None and m["Cc"] is None
        assert [a.addr_spec for a in m["To"].addresses] == rec.rcpt_tos
        assert m["From"].addresses[0].display_name == "NALACC Alertas"
        assert m["Message-ID"].endswith("@nalacc.test>")
        ids.add(m["Message-ID"])
        assert email.utils.parsedate_to_datetime(m["Date"]) is not None
        assert m["List-Unsubscribe"].startswith("<https://alerts.nalacc.test/u/")
        assert rec.rcpt_tos[0].split("@")[0] not in m["List-Unsubscribe"]  # opaque token
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert m.get_content_type() == "multipart/alternative"
        assert all(len(line) <= 998 for line in rec.data.split(b"\r\n"))
    assert len(ids) == len(smtp_server.received)
    eve = smtp_server.to("eve@example.net")[0].message
    assert eve["To"].addresses[0].display_name == "Eve Bcc: x@evil.example"
    ana = smtp_server.to("ana@example.org")[0].message
    assert ana["To"].addresses[0].display_name == "Ana Lucía Pérez"
    assert not smtp_server.to("x@evil.example")


def test_451_on_some_rcpts_is_retried_and_delivered_once(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    refused: Counter = Counter()

    def rcpt(address: str) -> str | None:
        if address in ("bob@example.com", "jose@example.org") and refused[address] < 2:
            refused[address] += 1
            return "451 4.7.1 Greylisted, try again later"
        return None

    smtp_server.on_rcpt = rcpt
    clock = FakeClock()
    out = run(clock)
    assert received_by(smtp_server) == Counter(VALID)
    assert out.sent == len(VALID) and sent(project) == set(VALID) and not out.failed
    assert refused == {"bob@example.com": 2, "jose@example.org": 2}
    assert clock.now - 1000.0 >= campaign.backoff(1) + campaign.backoff(2)  # it did back off


def test_4xx_forever_gives_up_after_the_configured_retries(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server, retries=3)
    calls: Counter = Counter()

    def rcpt(address: str) -> str | None:
        calls[address] += 1
        return "452 4.2.2 Mailbox full" if address == "bob@example.com" else None

    smtp_server.on_rcpt = rcpt
    with pytest.raises(NewsletterError, match="--retry-failed"):
        run(FakeClock())
    assert calls["bob@example.com"] == 3
    assert states(project)["bob@example.com"] == "failed"
    assert received_by(smtp_server) == Counter(a for a in VALID if a != "bob@example.com")


def test_550_on_one_fails_it_and_the_run_goes_on(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    # A 5xx that does not say the address is gone (a "user unknown" would suppress it: that
    # is tests/test_bounces.py's), so --retry-failed below may still reach it.
    smtp_server.on_rcpt = lambda a: "552 5.2.2 Mailbox full" if a == "bob@example.com" else None
    result = send("--yes")
    assert result.exit_code == 1
    assert "bob@example.com: 552 5.2.2 Mailbox full" in result.output
    assert "--retry-failed" in result.output and "Traceback" not in result.output
    assert received_by(smtp_server) == Counter(a for a in VALID if a != "bob@example.com")
    assert states(project)["bob@example.com"] == "failed"

    # Not retried on a plain re-run; retried (and now accepted) with --retry-failed.
    smtp_server.on_rcpt = None
    assert send("--yes").exit_code == 1
    assert not smtp_server.to("bob@example.com")
    assert send("--yes", "--retry-failed").exit_code == 0
    assert received_by(smtp_server) == Counter(VALID)


def test_connection_lost_after_data_is_uncertain_and_not_resent(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    smtp_server.drop_after_data = {"bob@example.com"}
    result = send("--yes")
    assert "uncertain 1" in result.output, result.output
    assert "bob@example.com" in result.output and "--retry-uncertain" in result.output
    # The server has it once; everyone else too (the next message reconnected).
    assert received_by(smtp_server) == Counter(VALID)
    assert states(project)["bob@example.com"] == "in_flight"

    smtp_server.drop_after_data = set()
    again = send("--yes")
    assert "uncertain 1" in again.output and "skipped 3" in again.output
    assert received_by(smtp_server) == Counter(VALID)  # not twice

    resend = send("--yes", "--retry-uncertain")
    assert resend.exit_code == 0, resend.output
    assert received_by(smtp_server)["bob@example.com"] == 2  # asked for explicitly
    assert states(project)["bob@example.com"] == "sent"


# The slow-server tests: the client's [smtp] timeout, and how long the one slow step stalls.
# Every other reply must come within the timeout, and the stall must outlast it, however
# loaded the machine (0.3 s and 1.0 s left either to a 0.3 s pause of the test process).
# The stall costs nothing: aiosmtpd cancels it when the client hangs up.
SLOW_TIMEOUT = 1.0
STALL = 10.0


def test_slow_server_hits_the_timeout_and_is_retried(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server, timeout=SLOW_TIMEOUT)
    slow = {"jose@example.org": 1}

    async def rcpt(address: str) -> None:
        if slow.get(address):
            slow[address] -= 1
            await asyncio.sleep(STALL)  # longer than the client's timeout, once

    smtp_server.on_rcpt = rcpt
    out = run(FakeClock())
    assert out.sent == len(VALID) and sent(project) == set(VALID)
    assert received_by(smtp_server) == Counter(VALID)
    assert states(project)["jose@example.org"] == "sent"


def test_wrong_credentials_stop_at_once_without_the_password(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server, username="nalacc")
    smtp_server.auth = ("nalacc", "right-password")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong-password-42")
    result = send("--yes", "--connections", "2")
    assert result.exit_code == 1
    assert "refused the login" in result.output and "NEWSLETTER_SMTP_PASSWORD" in result.output
    assert "wrong-password-42" not in result.output and "Traceback" not in result.output
    assert not smtp_server.received
    assert set(states(project).values()) == {"pending"}

    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "right-password")
    assert send("--yes").exit_code == 0
    assert received_by(smtp_server) == Counter(VALID)


def test_password_over_plaintext_is_refused_unless_loopback(project, monkeypatch):
    setup_project(
        project, monkeypatch, host="smtp.example.org", port=25, security="none", username="nalacc"
    )
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "secret-pw")
    result = send("--yes")
    assert result.exit_code == 1
    assert "unencrypted" in result.output and "secret-pw" not in result.output


def test_outage_stops_and_prints_the_resume_command(project, monkeypatch, refused_port):
    setup_project(
        project, monkeypatch, host="127.0.0.1", port=refused_port, security="none", retries=2
    )
    clock = FakeClock()
    with pytest.raises(NewsletterError, match="cannot connect"):
        run(clock, connections=2)
    assert set(states(project).values()) == {"pending"}  # nobody in flight, nobody failed
    monkeypatch.setenv("NEWSLETTER_SMTP_RETRIES", "1")  # the CLI waits for real: no backoff
    result = send("--yes")
    assert result.exit_code == 1
    assert f"To resume: newsletter send {ALERT} --to members.csv" in result.output


def test_connections_and_rate_cap(project, smtp_server, monkeypatch):
    many = "email,name,language\n" + "".join(
        f"m{i}@example.org,Member {i},{'es' if i % 2 else 'en'}\n" for i in range(30)
    )
    setup_project(project, monkeypatch, smtp_server, csv=many)
    clock = FakeClock()
    out = run(clock, connections=3, rate=10.0)
    assert out.sent == 30
    assert received_by(smtp_server) == Counter(f"m{i}@example.org" for i in range(30))
    # 30 messages at 10/s: the shared bucket spaced them over at least 2.9 (fake) seconds.
    assert clock.now - 1000.0 >= 2.9


def test_dry_run_builds_everything_and_sends_and_writes_nothing(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = send("--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 4 of 4 message(s) built" in result.output
    assert not smtp_server.received
    with Journal(project / "newsletter.db") as j:
        assert not j.states(ALERT_ID)


def test_each_edition_is_rendered_once_and_what_was_checked_is_sent(
    project, smtp_server, monkeypatch
):
    """The check before a send renders every edition; the send reuses its member editions
    instead of rendering (premailer and all) a second time."""
    from newsletter import render

    setup_project(project, monkeypatch, smtp_server)
    log = project / "rendered.log"  # the check runs in a process of its own: counted in a file
    real = render.render_edition

    def counted(cfg, alert, lang, variant="member"):
        with log.open("a", encoding="utf-8") as f:
            f.write(f"{lang} {variant}\n")
        return real(cfg, alert, lang, variant)

    monkeypatch.setattr(render, "render_edition", counted)
    result = send("--yes")
    assert result.exit_code == 0, result.output
    rendered = [tuple(line.split()) for line in log.read_text(encoding="utf-8").splitlines()]
    assert sorted(rendered) == sorted(set(rendered))  # each language and variant once
    assert {v for _, v in rendered} == {"member", "forward", "archive"}
    assert len(smtp_server.received) == len(VALID)


def test_check_errors_stop_a_send_but_not_a_test_copy(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    toml = project / "newsletter.toml"
    toml.write_text(
        "\n".join(x for x in toml.read_text().splitlines() if "postal_address" not in x) + "\n"
    )
    result = send("--yes")
    assert result.exit_code == 1 and "E-POSTAL" in result.output
    assert "error(s) from `newsletter check`" in result.output
    assert not smtp_server.received
    test = send("--test", "editor@example.org", "--lang", "es")
    assert test.exit_code == 0 and "sending the test copy anyway" in test.output
    assert [r.rcpt_tos for r in smtp_server.wait_for(1)] == [["editor@example.org"]]


def test_limit_then_the_rest(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    assert send("--yes", "--limit", "2").exit_code == 0
    assert sum(received_by(smtp_server).values()) == 2
    assert send("--yes").exit_code == 0
    assert received_by(smtp_server) == Counter(VALID)


def test_asks_before_a_real_send(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    no = send(input="n\n")
    assert f"Send to 4 recipients via 127.0.0.1:{smtp_server.port}?" in no.output
    assert no.exit_code == 1 and not smtp_server.received
    yes = send(input="y\n")
    assert yes.exit_code == 0, yes.output
    assert received_by(smtp_server) == Counter(VALID)


def test_test_copy_is_marked_and_not_journaled(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = send("--test", "editor@example.org", "--lang", "en")
    assert result.exit_code == 0, result.output
    (rec,) = smtp_server.wait_for(1)
    assert rec.rcpt_tos == ["editor@example.org"]
    assert rec.message["Subject"].startswith("[TEST] ")
    assert "accepted by 127.0.0.1" in result.output
    bad = send("--test", "Editor <editor@example.org>")
    assert bad.exit_code == 1 and "--test 'Editor <editor@example.org>'" in bad.output
    db = project / "newsletter.db"
    if db.exists():
        assert not sqlite3.connect(db).execute("SELECT count(*) FROM deliveries").fetchone()[0]


def test_no_smtp_host_delivers_into_the_outbox(project, monkeypatch):
    setup_project(project, monkeypatch)
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert "No [smtp] host configured" in result.output
    files = sorted((project / "outbox" / ALERT_ID).glob("*.eml"))
    assert len(files) == len(VALID)
    import email as email_pkg
    import email.policy

    to = sorted(
        email_pkg.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for f in files
    )
    assert to == sorted(VALID)
    assert not list((project / "outbox" / ALERT_ID).glob(".*"))  # no temporary file left


@pytest.mark.parametrize("pipelining", [True, False])
def test_refusals_with_and_without_pipelining(project, smtp_server, monkeypatch, pipelining):
    """Both ways of speaking SMTP give the same replies; the connection survives a refusal."""
    smtp_server.pipelining = pipelining
    setup_project(project, monkeypatch, smtp_server)
    smtp_server.on_rcpt = lambda a: "550 5.1.1 No such user" if a == "bob@example.com" else None
    cfg = load_config()
    t = deliver.SmtpTransport(cfg)
    t.open()
    try:
        assert t._pipelining is pipelining
        for rcpt, code in [
            ("ana@example.org", 250),
            ("bob@example.com", 550),
            ("eve@example.net", 250),
        ]:
            assert t.send("alerts@nalacc.example.org", rcpt, b"Subject: x\r\n\r\nhi\r\n")[0] == code
        with pytest.raises(NewsletterError):
            t.send(
                "alerts@nalacc.example.org", "x@example.org>\r\nRCPT TO:<y@example.org", b"x\r\n"
            )
    finally:
        t.close()
    assert received_by(smtp_server) == Counter(["ana@example.org", "eve@example.net"])


# --- TLS: STARTTLS on 587-style servers, implicit TLS on 465-style, certificates verified --------




@pytest.fixture
def tls_server(tmp_path):
    """Factory: an aiosmtpd server that requires STARTTLS (or speaks TLS at once) and a login."""
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.conftest import SmtpServer, _Handler, self_signed, start_smtp

    cert, key = self_signed(tmp_path)
    started = []

    def start(mode: str) -> tuple[SmtpServer, Path]:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        server = SmtpServer("127.0.0.1", 0)

        def check(srv, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data == (b"nalacc", b"s3cret")
            return AuthResult(success=ok, handled=False)

        tls = (
            {"tls_context": ctx, "require_starttls": True}
            if mode == "starttls"
            # aiosmtpd only counts STARTTLS as TLS for AUTH; here the whole session is TLS.
            else {"ssl_context": ctx, "auth_require_tls": False}
        )
        tls["auth_required"] = mode == "starttls"
        c = start_smtp(server, _Handler(server), authenticator=check, **tls)
        started.append(c)
        return server, cert

    yield start
    for c in started:
        c.stop()


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_tls_with_a_verified_certificate_and_login(project, monkeypatch, tls_server, mode):
    server, cert = tls_server(mode)
    setup_project(
        project,
        monkeypatch,
        host="127.0.0.1",
        port=server.port,
        security=mode,
        username="nalacc",
        timeout=5,
    )
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate, nothing else
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert received_by(server) == Counter(VALID)


def test_tls_with_an_untrusted_certificate_stops_before_the_login(project, monkeypatch, tls_server):
    server, _ = tls_server("starttls")
    setup_project(
        project,
        monkeypatch,
        host="127.0.0.1",
        port=server.port,
        security="starttls",
        username="nalacc",
        timeout=5,
    )
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "s3cret")
    result = send("--yes")
    assert result.exit_code == 1
    assert "certificate does not verify" in result.output and "s3cret" not in result.output
    assert not server.received
    assert set(states(project).values()) == {"pending"}


def test_flight_logs_come_back_into_the_state_file_after_a_crash(tmp_path):
    """A connection's flight log holds its marks and outcomes; opening the state file after a
    crash copies them in: the last one in flight reads as uncertain, never as pending."""
    from newsletter.flightlog import FlightLog
    from newsletter.recipients import Recipient

    people = [
        Recipient(f"p{i}@example.org", f"p{i}@example.org", "", "es", {}, i) for i in range(3)
    ]
    state = tmp_path / "state.db"
    with Journal(state) as j:
        make_plan(j, "a", people)
        log = FlightLog(j.flight_path(0))
        log.mark("a", "p0@example.org", "<0@x>", "es", 1)
        log.outcome("a", "p0@example.org", "sent", "250 ok", "es")
        log.mark("a", "p1@example.org", "<1@x>", "es", 1)  # p0's outcome is on disk with it
        log.outcome("a", "p1@example.org", "sent", "250 ok", "es")  # not yet on disk: lost
        assert j.states("a") == dict.fromkeys(
            ["p0@example.org", "p1@example.org", "p2@example.org"], "pending"
        )
        # the process dies here: no close(), no copy into the state file
    with Journal(state) as j:
        assert j.states("a") == {
            "p0@example.org": "sent",
            "p1@example.org": "in_flight",
            "p2@example.org": "pending",
        }
        assert [r.message_id for r in j.rows("a", "in_flight")] == ["<1@x>"]
    assert not list(tmp_path.glob("state.db.flight-*"))  # copied in, then removed


def test_a_flight_log_never_overwrites_a_newer_state(tmp_path):
    """Rows from two connections (a retry moved to another one) land oldest first, and a stale
    row never undoes a later attempt or a delivery already sent."""
    from newsletter.flightlog import FlightLog
    from newsletter.recipients import Recipient

    people = [
        Recipient(f"p{i}@example.org", f"p{i}@example.org", "", "es", {}, i) for i in range(2)
    ]
    state = tmp_path / "state.db"
    with Journal(state) as j:
        make_plan(j, "a", people)
        first, second = FlightLog(j.flight_path(0)), FlightLog(j.flight_path(1))
        first.mark("a", "p0@example.org", "<0a@x>", "es", 1)
        first.outcome("a", "p0@example.org", "retry", "451 later", "es")
        first.mark("a", "p1@example.org", "<1@x>", "es", 1)
        second.mark("a", "p0@example.org", "<0b@x>", "es", 2)  # the retry, on connection 1
        second.outcome("a", "p0@example.org", "sent", "250 ok", "es")
        second.close()
        first.outcome("a", "p1@example.org", "sent", "250 ok", "es")
        first.close()
        j.recover()
        rows = {r.key: r for r in j.rows("a")}
        assert rows["p0@example.org"].status == "sent" and rows["p0@example.org"].attempts == 2
        assert rows["p0@example.org"].message_id == "<0b@x>"
        assert rows["p1@example.org"].status == "sent"
        j.apply_flight([("a", "p0@example.org", "in_flight", 3, "<0c@x>", "es", "", "9999", None)])
        assert j.states("a")["p0@example.org"] == "sent"  # sent stays sent


def test_a_flight_log_cut_mid_record_is_read_up_to_the_cut(tmp_path):
    """A crash in the middle of a write leaves part of a record: reading stops there (its mark
    never returned, so that message's bytes never went out)."""
    from newsletter.flightlog import FlightLog, read_flight

    log = FlightLog(tmp_path / "state.db.flight-0")
    log.mark("a", "p0@example.org", "<0@x>", "es", 1)
    log.outcome("a", "p0@example.org", "sent", "250 2.0.0 ok\x1f", "es")
    log.mark("a", "p1@example.org", "<1@x>", "es", 2)
    log.close()
    rows, end = read_flight(log.path)
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("p0@example.org", "in_flight", 1, "<0@x>"),
        ("p0@example.org", "sent", 0, None),
        ("p1@example.org", "in_flight", 2, "<1@x>"),
    ]
    assert rows[1][6] == "250 2.0.0 ok" and rows[1][8] is not None  # cleaned; sent_at kept
    assert read_flight(log.path, end) == ([], end)  # nothing after the last whole record

    with log.path.open("r+b") as f:  # the last record's tail never reached the disk
        f.seek(end - 4)
        f.write(bytes(4))
    assert [r[1:3] for r in read_flight(log.path)[0]] == [
        ("p0@example.org", "in_flight"),
        ("p0@example.org", "sent"),
    ]
    with log.path.open("r+b") as f:  # a flipped byte in the first record: nothing is trusted
        f.seek(12)
        f.write(b"X")
    assert read_flight(log.path) == ([], 0)
