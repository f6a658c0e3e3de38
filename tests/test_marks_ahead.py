"""Marks written ahead (a slow disk beside a fast server): never twice, and nobody left in flight
who was not on the wire when a run stops.

A slow disk cannot be had on cue, so these tests lower sender.SYNC_SHARE to 0 (and raise
QUICK_WORK): every sync then counts as slow beside a message and the senders mark recipients
ahead of their turn, as they do on a busy disk.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from newsletter import sender
from newsletter.flightlog import FlightLog
from newsletter.suppressions import Suppressions
from tests.conftest import SmtpServer, _Handler, start_smtp
from tests.test_send import FakeClock, received_by, run, setup_project, states

N = 30
ROWS = "email,name,language\n" + "".join(
    f"m{i:02d}@example.org,Member {i},{'es' if i % 2 else 'en'}\n" for i in range(N)
)
EVERYONE = {f"m{i:02d}@example.org" for i in range(N)}


@pytest.fixture
def marks(monkeypatch) -> list[tuple[str, bool]]:
    """Marks ahead on; returns the (address, waited) of every mark, in order (K=1: the sender
    is a thread of this process)."""
    monkeypatch.setattr(sender, "SYNC_SHARE", 0.0)
    monkeypatch.setattr(sender, "QUICK_WORK", 60.0)  # however slow this machine is today
    seen: list[tuple[str, bool]] = []
    real, real_many = FlightLog.mark, FlightLog.mark_many

    def spy(self, alert_id, key, message_id, lang, attempts, *, wait=True):
        seen.append((key, wait))
        return real(self, alert_id, key, message_id, lang, attempts, wait=wait)

    def spy_many(self, rows):
        rows = list(rows)
        seen.extend((key, False) for _, key, *_ in rows)  # written ahead, not waited for
        return real_many(self, rows)

    monkeypatch.setattr(FlightLog, "mark", spy)
    monkeypatch.setattr(FlightLog, "mark_many", spy_many)
    return seen


@pytest.fixture
def batches(monkeypatch) -> list[int]:
    """The size of every batch of marks written ahead (FlightLog.mark_many), in order."""
    sizes: list[int] = []
    real = FlightLog.mark_many

    def spy(self, rows):
        rows = list(rows)
        sizes.append(len(rows))
        return real(self, rows)

    monkeypatch.setattr(FlightLog, "mark_many", spy)
    return sizes


@pytest.mark.parametrize("connections", [1, 3])
def test_marks_ahead_send_everyone_once(project, smtp_server, monkeypatch, marks, connections):
    setup_project(project, monkeypatch, smtp_server, csv=ROWS)
    out = run(FakeClock(), connections=connections)
    assert out.sent == N and not out.uncertain
    assert received_by(smtp_server) == dict.fromkeys(EVERYONE, 1)
    assert set(states(project).values()) == {"sent"}
    assert not list(project.glob("newsletter.db.flight-*"))
    if connections == 1:  # the senders did mark ahead (processes' marks are not seen here)
        assert any(not waited for _, waited in marks)


def test_an_unsubscribe_after_the_mark_ahead_is_honoured_and_left_pending(
    project, smtp_server, monkeypatch, marks
):
    setup_project(project, monkeypatch, smtp_server, csv=ROWS)
    from newsletter.journal import Journal

    gone: list[str] = []

    def rcpt(address: str) -> None:
        if gone or address < "m05":
            return
        # The furthest recipient already marked ahead, whose message has not gone yet.
        ahead = [k for k, waited in marks if not waited and k > address]
        if ahead:
            gone.append(ahead[-1])
            with Journal(project / "newsletter.db") as j:
                Suppressions(j).add(ahead[-1], "one-click")

    smtp_server.on_rcpt = rcpt
    out = run(FakeClock(), connections=1)
    assert gone, "no recipient was marked ahead"
    assert out.suppressed == 1 and not out.uncertain
    assert gone[0] not in received_by(smtp_server)
    assert states(project)[gone[0]] == "pending"  # marked ahead, then written back
    assert received_by(smtp_server) == dict.fromkeys(EVERYONE - set(gone), 1)


class _RefusingHandler(_Handler):
    """The shared handler; after `accept` messages, MAIL FROM is refused for good (550)."""

    def __init__(self, server: SmtpServer, accept: int) -> None:
        super().__init__(server)
        self.accept = accept

    async def handle_MAIL(self, srv, session, envelope, address, mail_options):  # noqa: N802
        if len(self.server.received) >= self.accept:
            return "550 5.7.1 sender no longer accepted"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


@pytest.fixture
def refusing_server() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", 0)
    controller = start_smtp(server, _RefusingHandler(server, accept=8))
    try:
        yield server
    finally:
        controller.stop()


def test_a_run_that_stops_writes_the_marks_ahead_back_as_pending(
    project, refusing_server, monkeypatch, marks
):
    """The relay stops taking the sender mid-run: the run stops; the recipients marked ahead
    whose turn had not come are pending again (the next run sends them), not uncertain."""
    from newsletter.errors import NewsletterError

    setup_project(project, monkeypatch, refusing_server, csv=ROWS)
    with pytest.raises(NewsletterError, match="refused the sender"):
        run(FakeClock(), connections=1)
    assert any(not waited for _, waited in marks)
    got = received_by(refusing_server)
    st = states(project)
    assert {a for a, s in st.items() if s == "sent"} == set(got) and len(got) == 8
    assert "in_flight" not in st.values()  # nobody left uncertain
    assert all(n == 1 for n in got.values())


def test_a_batch_of_marks_is_on_disk_before_any_of_its_messages(
    project, smtp_server, monkeypatch, marks, batches
):
    """Marks written ahead in one batch share one fdatasync (group commit); no message of the
    batch may leave before that sync has ended. Each fdatasync is slowed down (a slow disk, which
    a real one does not give on cue): a message that did not wait for its batch's sync reaches
    the server while its mark is still only in the page cache."""
    import os
    import time
    from pathlib import Path

    from newsletter import journal
    from newsletter.flightlog import read_flight

    durable: set[str] = set()  # recipients whose in-flight mark an fdatasync has covered
    early: list[str] = []
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        rows = read_flight(path)[0] if ".flight-" in path.name else []
        time.sleep(0.05)
        real(fd)
        durable.update(row[1] for row in rows if row[2] == "in_flight")

    def data(rec) -> None:
        early.extend(a for a in rec.rcpt_tos if a not in durable)

    monkeypatch.setattr(journal.os, "fdatasync", slow_fdatasync)
    setup_project(project, monkeypatch, smtp_server, csv=ROWS)
    smtp_server.on_data = data
    out = run(FakeClock(), connections=1)
    assert out.sent == N
    assert max(batches) > 1 and len(batches) < N / 2  # marks did go ahead, in batches
    assert not early, f"sent before their batch was on disk: {early}"
    assert received_by(smtp_server) == dict.fromkeys(EVERYONE, 1)


def test_a_slow_server_gets_no_marks_ahead_even_from_its_first_quick_looking_message(
    project, smtp_server, monkeypatch, batches
):
    """The first message of a connection looks quick (the wait for its data's reply is counted
    in the next message's time). Counted in, it made a 40 ms-a-message server look quick
    enough to mark a whole batch ahead, and a crash then left all of them uncertain."""
    import asyncio

    monkeypatch.setattr(sender, "SYNC_SHARE", 0.0)  # every sync counts as slow: only the server's
    monkeypatch.setattr(sender, "QUICK_WORK", 0.015)  # speed decides (40 ms is not quick)

    async def slow(rec) -> None:
        await asyncio.sleep(0.04)

    ten = "email,name\n" + "".join(f"m{i:02d}@example.org,Member {i}\n" for i in range(10))
    setup_project(project, monkeypatch, smtp_server, csv=ten)
    smtp_server.on_data = slow
    out = run(FakeClock(), connections=1)
    assert out.sent == 10
    assert batches == []  # each recipient marked at its own turn only
