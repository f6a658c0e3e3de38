"""The next message's envelope rides in the same write as a message's data (sender._Sender
.prepare_next): a run that stops then must not leave that envelope's transaction behind."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from newsletter.errors import NewsletterError
from tests.test_send import FakeClock, received_by, run, setup_project, states

N = 12
ROWS = "email,name,language\n" + "".join(f"m{i:02d}@example.org,Member {i},es\n" for i in range(N))
EVERYONE = [f"m{i:02d}@example.org" for i in range(N)]


def test_a_run_stopped_with_an_envelope_sent_ahead_delivers_it_later_once(
    project, smtp_server, monkeypatch
):
    """Ctrl-C while the server reads m03: the sender finishes the message on the wire (m04,
    whose envelope went behind m03's data) and stops with m05's envelope already answered
    (354). m05 must get neither an empty message (a lone ".") nor anything else: the line is
    cut, the server drops the transaction, m05 is not uncertain, and the next run sends it
    once."""
    setup_project(project, monkeypatch, smtp_server, csv=ROWS)

    async def data(rec) -> None:
        if rec.rcpt_tos == ["m03@example.org"]:
            os.kill(os.getpid(), signal.SIGINT)  # this test runs the send in the main thread
            await asyncio.sleep(0.3)  # the parent sees it and raises the stop flag meanwhile

    smtp_server.on_data = data
    with pytest.raises(NewsletterError, match="Interrupted"):
        run(FakeClock(), connections=1)
    first = states(project)
    assert "in_flight" not in first.values()  # nobody uncertain
    sent = {a for a, s in first.items() if s == "sent"}
    assert {f"m{i:02d}@example.org" for i in range(5)} <= sent  # m04 finished on the wire
    got = received_by(smtp_server)
    assert all(rec.data.strip() for rec in smtp_server.received)  # no empty message
    assert all(n == 1 for n in got.values()) and set(got) == sent
    assert "m05@example.org" not in got

    smtp_server.on_data = None
    again = run(FakeClock(), connections=1)
    assert not again.uncertain and len(sent) + again.sent == N
    assert received_by(smtp_server) == dict.fromkeys(EVERYONE, 1)
