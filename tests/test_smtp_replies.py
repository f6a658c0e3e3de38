"""SMTP replies as the sender reads them: several in one read, one cut anywhere across reads,
multi-line replies, malformed lines (SmtpTransport._replies, over one receive buffer).

A scripted server on 127.0.0.1 (a real socket: aiosmtpd always answers well-formed, in whole
lines) answers each group of commands with bytes written one at a time, so every reply arrives
cut at every possible place.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from newsletter import deliver
from newsletter.config import load_config
from tests.test_send import setup_project

EHLO = b"250-scripted\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n"
DEADLINE = 20.0  # seconds a scripted server waits for a command before it gives up


class Scripted:
    """One connection: the greeting, then for each (marker, reply) of the script, reads until
    the marker has arrived and writes the reply a byte at a time; then answers QUIT, or with
    `hang_up` closes the line at once. Keeps what it read."""

    def __init__(
        self, script: list[tuple[bytes, bytes]], trickle: bool = True, hang_up: bool = False
    ) -> None:
        self.script, self.trickle, self.hang_up = script, trickle, hang_up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.read = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.listener.settimeout(DEADLINE)
        conn, _ = self.listener.accept()
        conn.settimeout(DEADLINE)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            conn.sendall(b"220 scripted ESMTP\r\n")
            seen = 0
            quit = [] if self.hang_up else [(b"QUIT\r\n", b"221 bye\r\n")]
            for marker, reply in [(b"ehlo", EHLO), *self.script, *quit]:  # smtplib: "ehlo"
                while (at := self.read.find(marker, seen)) < 0:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    self.read += chunk
                seen = at + len(marker)
                for i in range(len(reply)) if self.trickle else [None]:
                    conn.sendall(reply if i is None else reply[i : i + 1])
                    if i is not None and i % 7 == 0:
                        time.sleep(0.001)  # let the sender read what came so far

    def close(self) -> None:
        self.listener.close()
        self.thread.join(DEADLINE)


@pytest.fixture
def scripted(project, monkeypatch) -> Iterator:
    """Factory: a transport logged in to a scripted server (closed after the test)."""
    made: list[tuple[Scripted, deliver.SmtpTransport]] = []

    def make(script: list[tuple[bytes, bytes]], **how: bool) -> deliver.SmtpTransport:
        server = Scripted(script, **how)
        setup_project(
            project, monkeypatch, host="127.0.0.1", port=server.port, security="none", timeout=5
        )
        t = deliver.SmtpTransport(load_config())
        t.open()
        made.append((server, t))
        return t

    yield make
    for server, t in made:
        t.close()
        server.close()


def test_pipelined_replies_cut_anywhere_and_multi_line(scripted):
    t = scripted(
        [
            (b"DATA\r\n", b"250-2.1.0 sender\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"),
            (
                b"\r\n.\r\nMAIL",  # the data's end, then the next envelope
                b"250-2.0.0 queued\r\n250 2.0.0 as ABC\r\n"
                b"250 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user here\r\n503 no valid recipients\r\n",
            ),
            (b"RSET\r\n", b"250 reset\r\n"),
            (b"DATA\r\n", b"250 ok\r\n250 ok\r\n354 go\r\n"),
        ]
    )
    assert t.pipelining
    final, env, refused = t.exchange(False, "a@nalacc.test", "ana@example.org", 40)
    assert (final, env, refused) == (None, (354, "go ahead"), False)
    t.write_data(b"Subject: x\r\n\r\nhi\r\n", dot_safe=True)
    final, env, refused = t.exchange(True, "a@nalacc.test", "bob@example.org", 40)
    assert final == (250, "2.0.0 queued 2.0.0 as ABC")  # both lines of the reply, in order
    assert env == (550, "5.1.1 no such 5.1.1 user here") and not refused
    assert t.connected  # a refusal keeps the connection (RSET)
    final, env, _ = t.exchange(False, "a@nalacc.test", "eve@example.org", 40)
    assert env == (354, "go")


def test_a_reply_without_a_three_digit_code_is_no_success(scripted):
    t = scripted(
        [
            (b"DATA\r\n", b"250 ok\r\n25O ok\r\n354 go\r\n"),
            (b".\r\n", b"250 empty\r\n"),  # the sender ends the DATA it did not want
            (b"RSET\r\n", b"250 ok\r\n"),
        ]
    )
    _, env, _ = t.exchange(False, "a@nalacc.test", "ana@example.org", 40)
    assert env == (-1, "ok")  # the RCPT's reply: a refusal, never taken for a 250
    assert t.connected


def test_a_reply_line_longer_than_smtp_allows_breaks_the_connection(scripted):
    # No line end ever comes: the sender stops reading at SMTP's limit, not at the timeout.
    t = scripted([(b"DATA\r\n", b"250 " + b"x" * 9000)], trickle=False)
    with pytest.raises(deliver.Broken, match="Line too long"):
        t.exchange(False, "a@nalacc.test", "ana@example.org", 40)
    assert not t.connected


def test_a_server_that_hangs_up_mid_reply_breaks_the_exchange(scripted):
    t = scripted([(b"DATA\r\n", b"250 ok\r\n250 o")], hang_up=True)
    with pytest.raises(deliver.Broken, match="connection closed by the server"):
        t.exchange(False, "a@nalacc.test", "ana@example.org", 40)
    assert not t.connected
