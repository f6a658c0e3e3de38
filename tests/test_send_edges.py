"""Edges of `newsletter send` the main send tests leave out, against a real SMTP server.

A server that closes the line right after a (delivered) 250, a server slow to answer the
message itself, both List-Unsubscribe forms, a list without an email column, K connections.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections import Counter
from collections.abc import Iterator

import pytest

from newsletter.contacts import Contacts
from newsletter.journal import Journal
from newsletter.suppressions import Suppressions
from tests.conftest import ALERT_ID, SmtpServer, _Handler, start_smtp
from tests.test_send import (
    ALERT,
    SLOW_TIMEOUT,
    STALL,
    VALID,
    FakeClock,
    received_by,
    run,
    send,
    sent,
    setup_project,
    states,
)


class _ClosingHandler(_Handler):
    """The shared handler, plus: hang up after the 250 (which is delivered), note each peer."""

    def __init__(self, server: SmtpServer) -> None:
        super().__init__(server)
        self.close_after: set[str] = set()
        self.peers: set[tuple[str, int]] = set()

    async def handle_DATA(self, srv, session, envelope):  # noqa: N802
        reply = await super().handle_DATA(srv, session, envelope)
        self.peers.add(session.peer)
        if reply == "250 OK" and self.close_after & set(envelope.rcpt_tos):
            # Runs after aiosmtpd has written the 250; close() flushes it, then hangs up,
            # as a relay does that takes N messages per connection.
            asyncio.get_running_loop().call_soon(srv.transport.close)
            session.hanging_up = True
        return reply

    async def handle_MAIL(self, srv, session, envelope, address, mail_options):  # noqa: N802
        if getattr(session, "hanging_up", False):
            # A relay that hangs up after a message answers nothing more, even a command that
            # came in the same packet as the message's end (pipelined): no reply ever comes
            # (aiosmtpd cancels this when the line closes).
            await asyncio.sleep(60)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


@pytest.fixture
def closing_server() -> Iterator[tuple[SmtpServer, _ClosingHandler]]:
    server = SmtpServer("127.0.0.1", 0)
    handler = _ClosingHandler(server)
    controller = start_smtp(server, handler)
    try:
        yield server, handler
    finally:
        controller.stop()


@pytest.mark.parametrize("pipelining", [True, False])
def test_server_hangs_up_after_a_delivered_250(project, monkeypatch, closing_server, pipelining):
    """The 250 arrived: sent. The next message finds the line dead and reconnects: once each."""
    server, handler = closing_server
    server.pipelining = pipelining
    setup_project(project, monkeypatch, server)
    handler.close_after = {"ana@example.org", "eve@example.net"}
    out = run(FakeClock())
    assert out.sent == len(VALID) and sent(project) == set(VALID)
    assert not out.failed and not out.uncertain
    assert received_by(server) == Counter(VALID)
    assert set(states(project).values()) == {"sent"}
    # The message after each hang-up met a dead line (a retry, not a failure) and reconnected.
    assert len(handler.peers) == 3


def test_slow_answer_to_the_message_is_uncertain_never_resent(project, smtp_server, monkeypatch):
    """A timeout waiting for the reply to the data: the server may have it, so no retry."""
    setup_project(project, monkeypatch, smtp_server, timeout=SLOW_TIMEOUT)
    slow = {"bob@example.com": 1}

    async def data(rec) -> None:
        if slow.get(rec.rcpt_tos[0]):
            slow[rec.rcpt_tos[0]] -= 1
            await asyncio.sleep(STALL)  # longer than the client waits for the reply

    smtp_server.on_data = data
    out = run(FakeClock())
    assert [a for a, _ in out.uncertain] == ["bob@example.com"]
    assert sent(project) == {a for a in VALID if a != "bob@example.com"} and out.sent == 3
    others = Counter(a for a in VALID if a != "bob@example.com")
    assert received_by(smtp_server) - Counter(["bob@example.com"]) == others
    assert states(project)["bob@example.com"] == "in_flight"
    bob_copies = received_by(smtp_server)["bob@example.com"]  # 0 here: aiosmtpd dropped it

    again = send("--yes")
    assert again.exit_code == 0, again.output
    assert "uncertain 1" in again.output and "bob@example.com" in again.output
    assert received_by(smtp_server)["bob@example.com"] == bob_copies  # never resent unasked


def test_list_unsubscribe_has_the_https_url_and_the_mailto(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    monkeypatch.setenv("NEWSLETTER_SENDER_UNSUBSCRIBE_MAILTO", "baja@nalacc.test")
    assert send("--yes").exit_code == 0
    for rec in smtp_server.received:
        m = rec.message
        https, mailto = (u.strip() for u in m["List-Unsubscribe"].split(","))
        assert https.startswith("<https://alerts.nalacc.test/u/") and https.endswith(">")
        assert mailto == "<mailto:baja@nalacc.test?subject=unsubscribe>"
        assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_list_without_an_email_column_stops_before_anything_is_sent(
    project, smtp_server, monkeypatch
):
    setup_project(project, monkeypatch, smtp_server, csv="address;nombre\nana@example.org;Ana\n")
    result = send("--yes")
    assert result.exit_code == 1
    assert "members.csv:1: no 'email' column" in result.output
    assert "Traceback" not in result.output
    assert not smtp_server.received
    with Journal(project / "newsletter.db") as j:
        assert not j.states(ALERT_ID)


def test_k_connections_are_k_sessions(project, monkeypatch, closing_server):
    server, handler = closing_server
    many = "email,name\n" + "".join(f"m{i}@example.org,M {i}\n" for i in range(12))
    setup_project(project, monkeypatch, server, csv=many)

    async def slow(rec):  # each message takes a while: no one connection does all 12 first
        await asyncio.sleep(0.05)

    server.on_data = slow
    out = run(FakeClock(), connections=3)
    assert out.sent == 12 and sum(received_by(server).values()) == 12
    assert len(handler.peers) == 3  # three connections, each reused (no reconnect per message)


def test_a_short_list_spreads_over_every_connection(project, monkeypatch, closing_server):
    """As many recipients as connections: one each, not all queued on the first."""
    server, handler = closing_server
    three = "email,name\n" + "".join(f"m{i}@example.org,M {i}\n" for i in range(3))
    setup_project(project, monkeypatch, server, csv=three)

    async def slow(rec):  # no connection is done with its message before the others begin
        await asyncio.sleep(0.2)

    server.on_data = slow
    out = run(FakeClock(), connections=3)
    assert out.sent == 3 and len(handler.peers) == 3


def test_resume_command_after_an_outage_is_exact(project, monkeypatch, refused_port):
    setup_project(project, monkeypatch, host="127.0.0.1", port=refused_port, security="none")
    monkeypatch.setenv("NEWSLETTER_SMTP_RETRIES", "1")  # no backoff wait: the CLI clock is real
    result = send("--yes", "--connections", "2")
    assert result.exit_code == 1 and "cannot connect" in result.output
    resume = result.output.split("To resume: ", 1)[1].split()
    assert resume == ["newsletter", "send", ALERT, "--to", "members.csv", "--connections", "2"]


def test_resume_command_keeps_limit_and_retry_flags(project, monkeypatch, refused_port):
    setup_project(project, monkeypatch, host="127.0.0.1", port=refused_port, security="none")
    monkeypatch.setenv("NEWSLETTER_SMTP_RETRIES", "1")
    result = send("--yes", "--limit", "2", "--retry-failed", "--retry-uncertain")
    assert result.exit_code == 1 and "cannot connect" in result.output
    resume = result.output.split("To resume: ", 1)[1].split()
    assert {"--retry-failed", "--retry-uncertain"} <= set(resume)
    assert resume[resume.index("--limit") + 1] == "2"  # nothing was sent: the same 2


@pytest.fixture
def memory_keyring() -> Iterator[dict[tuple[str, str], str]]:
    """An in-memory keyring backend (a real one: keyring calls it as it would the OS store)."""
    import keyring
    from keyring.backend import KeyringBackend

    # Look up the default first: keyring picks it from every KeyringBackend subclass defined.
    before = keyring.get_keyring()
    store: dict[tuple[str, str], str] = {}

    class Memory(KeyringBackend):
        priority = -1  # type: ignore[assignment]  # never anyone's default, even later

        def get_password(self, service: str, username: str) -> str | None:
            return store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            store.pop((service, username), None)

    keyring.set_keyring(Memory())
    try:
        yield store
    finally:
        keyring.set_keyring(before)


def test_password_from_the_keyring(project, smtp_server, monkeypatch, memory_keyring):
    setup_project(project, monkeypatch, smtp_server, username="nalacc")
    smtp_server.auth = ("nalacc", "from-the-keyring")
    none = send("--yes")
    assert none.exit_code == 1 and "keyring set newsletter nalacc" in none.output
    assert not smtp_server.received

    memory_keyring[("newsletter", "nalacc")] = "from-the-keyring"
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == Counter(VALID)
    assert "from-the-keyring" not in result.output


def test_a_csv_column_is_a_merge_field_a_template_can_show(project, smtp_server, monkeypatch):
    """README: `{{ tokens.field("city") }}` in a template shows each member's City column."""
    setup_project(project, monkeypatch, smtp_server)
    footer = project / "templates" / "email" / "footer.txt"
    footer.write_text(
        footer.read_text(encoding="utf-8") + 'City: {{ tokens.field("city") }}\n', encoding="utf-8"
    )
    result = send("--yes")
    assert result.exit_code == 0, result.output
    cities = {
        "ana@example.org": "Chicago",
        "bob@example.com": "Boston",
        "jose@example.org": "Houston",
    }
    for address, city in cities.items():
        (rec,) = smtp_server.to(address)
        assert f"City: {city}\r\n" in rec.message.get_body(("plain",)).get_content()


class _NeedsLogin(_Handler):
    """A relay that takes no mail without a login: 530 to every MAIL FROM."""

    async def handle_MAIL(self, srv, session, envelope, address, mail_options):  # noqa: N802
        return "530 5.7.0 Authentication required"


class _RefusesSender(_Handler):
    """A relay that does not accept mail from the configured From address."""

    async def handle_MAIL(self, srv, session, envelope, address, mail_options):  # noqa: N802
        return "550 5.7.1 Sender address rejected: not owned by user"


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_relay_that_refuses_the_sender_stops_the_run(project, monkeypatch, pipelining):
    server = SmtpServer("127.0.0.1", 0, pipelining=pipelining)
    controller = start_smtp(server, _RefusesSender(server))
    try:
        setup_project(project, monkeypatch, server)
        result = send("--yes")
    finally:
        controller.stop()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "[sender] from" in result.output and "550 5.7.1" in result.output
    assert "failed" not in set(states(project).values())  # nobody marked failed for it
    assert server.received == []


def test_a_relay_that_wants_a_login_stops_the_run(project, monkeypatch):
    server = SmtpServer("127.0.0.1", 0)
    controller = start_smtp(server, _NeedsLogin(server))
    try:
        setup_project(project, monkeypatch, server)  # no [smtp] username
        result = send("--yes")
    finally:
        controller.stop()
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "username" in result.output  # the fix: set [smtp] username and the password
    assert "failed" not in set(states(project).values())  # nobody marked failed for it


def test_premailer_runs_per_edition_not_per_recipient(project, smtp_server, monkeypatch):
    """Inlining is the slow step (~40 ms): 3 or 30 recipients cost the same number of calls."""
    import premailer

    calls = project / "inlined.log"  # the check runs in a process of its own: counted in a file
    transform = premailer.Premailer.transform

    def counted(self, *args, **kwargs):
        with calls.open("a") as f:
            f.write("1\n")
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(premailer.Premailer, "transform", counted)
    per_run = []
    for n in (3, 30):
        rows = "".join(f"n{n}m{i}@example.org,M {i},{'es' if i % 2 else 'en'}\n" for i in range(n))
        setup_project(project, monkeypatch, smtp_server, csv="email,name,language\n" + rows)
        calls.write_text("")
        assert send("--yes").exit_code == 0
        per_run.append(len(calls.read_text().splitlines()))
    assert sum(received_by(smtp_server).values()) == 33
    assert per_run[0] == per_run[1] > 0


def test_an_unsubscribe_during_the_run_is_honoured(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)

    def rcpt(address: str) -> None:
        if address == "ana@example.org":  # the first message: jose unsubscribes meanwhile
            with Journal(project / "newsletter.db") as j:
                Suppressions(j).add("jose@example.org", "one-click")

    smtp_server.on_rcpt = rcpt
    run(FakeClock(), connections=1)
    assert "ana@example.org" in received_by(smtp_server)
    assert not smtp_server.to("jose@example.org")


def test_a_missing_secret_stops_before_anyone_is_marked(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    monkeypatch.delenv("NEWSLETTER_SECRET")
    result = send("--yes")
    assert result.exit_code == 1 and "NEWSLETTER_SECRET" in result.output
    assert not smtp_server.received
    assert "failed" not in set(states(project).values())


def test_a_timeout_is_reported_as_a_timeout(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server, timeout=SLOW_TIMEOUT)

    async def data(rec) -> None:
        if rec.rcpt_tos == ["bob@example.com"]:
            await asyncio.sleep(STALL)

    smtp_server.on_data = data
    out = run(FakeClock())
    (why,) = [why for address, why in out.uncertain if address == "bob@example.com"]
    assert "timed out" in why


def test_no_message_byte_goes_out_before_its_in_flight_mark_is_on_disk(
    project, smtp_server, monkeypatch
):
    """The mark's fsync overlaps the envelope; a mark that fails must stop that message."""
    import errno

    from newsletter.flightlog import FlightLog

    setup_project(project, monkeypatch, smtp_server)
    mark = FlightLog.mark

    def failing_mark(self, alert_id, key, *args, **kwargs):
        if key == "eve@example.net":  # a disk error a real file will not produce on cue
            raise OSError(errno.EIO, "disk I/O error")
        return mark(self, alert_id, key, *args, **kwargs)

    mark_many = FlightLog.mark_many

    def failing_batch(self, rows):  # marks written ahead, in a batch (a slow disk)
        rows = list(rows)
        if any(key == "eve@example.net" for _, key, *_ in rows):
            raise OSError(errno.EIO, "disk I/O error")
        return mark_many(self, rows)

    monkeypatch.setattr(FlightLog, "mark", failing_mark)  # the forked senders inherit it
    monkeypatch.setattr(FlightLog, "mark_many", failing_batch)
    result = send("--yes", "--connections", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write (disk I/O error)" in result.output
    assert not smtp_server.to("eve@example.net")  # the envelope went, the message did not
    assert all(n == 1 for n in received_by(smtp_server).values())
    assert states(project)["eve@example.net"] != "sent"


def test_a_dry_run_needs_no_smtp_password(project, monkeypatch):
    setup_project(project, monkeypatch, host="smtp.example.org", username="nalacc")
    result = send("--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 4 of 4 message(s) built" in result.output


def test_an_outbox_that_cannot_be_written_stops_with_its_path(project, monkeypatch):
    setup_project(project, monkeypatch)

    def refused(*args, **kwargs):  # a read-only folder; root, who runs the tests, ignores modes
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refused)
    result = send("--yes")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write (Permission denied)" in result.output
    assert "sent" not in states(project).values()


def test_a_sender_process_killed_mid_message_stops_the_run_never_twice(
    project, smtp_server, monkeypatch
):
    """A worker process dies (the OOM killer, say) while the server sits on its message: the
    run stops and says so, that recipient is uncertain, and a new run sends nobody twice."""
    import os
    import signal
    import threading
    from pathlib import Path

    rows = "".join(f"m{i:02d}@example.org,Member {i}\n" for i in range(12))
    setup_project(project, monkeypatch, smtp_server, csv="email,name\n" + rows)
    stuck = threading.Event()

    async def slow(rec):
        await asyncio.sleep(0.01)
        if rec.rcpt_tos == ["m03@example.org"]:
            stuck.set()
            await asyncio.sleep(10)  # cancelled when the sender's connection drops

    smtp_server.on_data = slow
    result = {}
    sender = threading.Thread(
        target=lambda: result.update(r=send("--yes", "--connections", "2")), daemon=True
    )
    sender.start()
    assert stuck.wait(30)
    # The senders of this run: the children of the thread that runs it (the test session
    # has other children, such as its browser).
    children = Path(f"/proc/{os.getpid()}/task/{sender.native_id}/children")
    workers = [int(pid) for pid in children.read_text().split()]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    sender.join(30)
    out = result["r"]
    assert out.exit_code == 1 and "a sender process died" in out.output
    assert "Traceback" not in out.output
    before = states(project)
    assert before["m03@example.org"] == "in_flight"  # its mark was on disk: uncertain

    smtp_server.on_data = None
    again = send("--yes", "--connections", "2")
    assert "m03@example.org" in again.output  # listed as uncertain, not resent
    got = received_by(smtp_server)
    assert all(n == 1 for n in got.values())
    assert "m03@example.org" not in got
    assert set(got) | {a for a, s in states(project).items() if s == "in_flight"} == {
        f"m{i:02d}@example.org" for i in range(12)
    }


def test_invisible_format_characters_never_reach_to_or_the_greeting(
    project, smtp_server, monkeypatch
):
    # U+202E (right-to-left override) makes "Ana\u202eZYX" read as "AnaXYZ"; the others hide.
    tricky = "Ana\u202e Lucía\u2066\u200b Pérez\u00ad\ufeff\U000e0041"
    csv = f"email,name,language\nana@example.org,{tricky},es\nbob@example.com,Bob\u200f,en\n"
    setup_project(project, monkeypatch, smtp_server, csv=csv)
    assert send("--yes").exit_code == 0
    by = {r.rcpt_tos[0]: r.message for r in smtp_server.received}
    ana, bob = by["ana@example.org"], by["bob@example.com"]
    assert str(ana["To"]) == "Ana Lucía Pérez <ana@example.org>"
    assert str(bob["To"]) == "Bob <bob@example.com>"
    assert "Hola, Ana Lucía Pérez:" in ana.get_body(("plain",)).get_content()
    assert "Ana Lucía Pérez" in ana.get_body(("html",)).get_content()
    for msg in (ana, bob):
        for part in (msg.get_body(("plain",)), msg.get_body(("html",))):
            assert not any(unicodedata.category(c) == "Cf" for c in part.get_content())
    with Journal(project / "newsletter.db") as j:
        assert Contacts(j).find("ana@example.org").name == "Ana Lucía Pérez"
        assert Contacts(j).find("bob@example.com").name == "Bob"


@pytest.mark.parametrize("connections", [1, 2])
def test_a_sender_that_cannot_start_stops_the_run_with_one_line(
    project, smtp_server, monkeypatch, connections
):
    """A sender whose flight log cannot be created (a full disk: a fault a test cannot make the
    real disk produce) reports it and the run stops with that line, nothing sent. The report
    once had three fields where the parent reads four: a ValueError traceback instead."""
    import errno

    from newsletter import sender

    class FullDisk:
        def __init__(self, path):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sender, "FlightLog", FullDisk)  # forked senders inherit the patch
    setup_project(project, monkeypatch, smtp_server)
    result = send("--yes", "--connections", str(connections))
    assert result.exit_code == 1, result.output
    assert "cannot create the flight log" in result.output
    assert "No space left on device" in result.output
    assert "Traceback" not in result.output and "ValueError" not in result.output
    assert not smtp_server.received
