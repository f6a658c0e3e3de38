"""What both sides of a send share: the Run (configuration, editions, clock), the retry
backoff, and the line between the parent (pool.py) and each worker (sender.py).

The parent hands out jobs and counts results over a socket pair per worker (_Line: one pickled
tuple per system call, at most LINE_MAX bytes):

    parent -> worker   ("start", flight log path, time of the plan)   once
                       ("jobs", [(recipient values, contact id, message id, lang, attempts,
                                  tries), …])
                       ("stop",)                no more work
    worker -> parent   ("done", [(kind, detail), …])  results of its jobs, in order
                       ("fatal", (kind, detail) | None, why, the relay's fault)
                                                it cannot go on (pool._Parent.receive)
"""

from __future__ import annotations

import pickle
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from newsletter import links, message
from newsletter.bounces.match import envelope_sender
from newsletter.config import Config
from newsletter.edition import Edition
from newsletter.recipients import Recipient
from newsletter.runlist import Planned

Prepared = dict[str, tuple[message.PreparedEdition, Edition]]  # language -> ready edition
Result = tuple[str, str]  # (kind, detail); kinds in _Parent.finish

BACKOFF_FIRST = 1.0  # seconds before the first retry of a recipient; doubles each time
BACKOFF_MAX = 30.0
POLL = 0.1  # longest anyone waits before looking at the stop flag again
LINE_MAX = 200_000  # bytes in one message between parent and worker (a job with its fields)


@dataclass
class Clock:
    """Time as the run sees it; tests pass a fake one so backoff and rate cost no real waiting."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def backoff(tries: int) -> float:
    """Seconds before retry number `tries` (1, 2, 4 … capped)."""
    return min(BACKOFF_FIRST * 2 ** (tries - 1), BACKOFF_MAX)


@dataclass
class Run:
    """What both sides of a send need: configuration, the prepared editions, the clock."""

    cfg: Config
    alert_id: str
    prepared: Prepared
    default_lang: str
    clock: Clock
    dry_run: bool
    # For a Run made before its editions exist (campaign renders and checks them in another
    # process while the workers start): fills alert_id, prepared and default_lang in a worker
    # process at its "start"; the parent sets them itself before deliver.
    ready: Callable[[Run], None] | None = None

    @property
    def retries(self) -> int:
        return max(1, self.cfg.smtp.retries)

    def lang(self, p: Planned) -> str:
        """The edition a planned recipient gets: theirs, else the alert's default."""
        return p.lang if p.lang in self.prepared else self.default_lang

    def build(
        self, r: Recipient, person: bytes, lang: str, message_id: str | None = None
    ) -> bytes:
        """The message bytes for one recipient in `lang`, their links and all (`person`: the
        public id's bytes, Planned.public_id)."""
        prep, ed = self.prepared[lang]
        member = links.edition_links(self.cfg, ed, person.hex())
        return prep.build(r, member, message_id=message_id)[1]

    def mail_from(self, lang: str, person: bytes) -> str:
        """The envelope sender of one member's message ([bounces] address, VERP)."""
        base = self.prepared[lang][0].mail_from
        if not self.cfg.bounces.verp:
            return base
        return envelope_sender(self.cfg, base, self.alert_id, person.hex())


class _Line:
    """One end of the line between the parent and a worker: whole pickled tuples, one system
    call each way (a SOCK_SEQPACKET socket pair keeps message boundaries). EOFError when the
    other end is gone."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(LINE_MAX + 1)

    @staticmethod
    def pair() -> tuple[_Line, _Line]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return _Line(a), _Line(b)

    def send(self, msg: tuple) -> None:
        data = pickle.dumps(msg, pickle.HIGHEST_PROTOCOL)
        if len(data) > LINE_MAX:
            raise ValueError(f"{len(data):,} bytes of recipient data (at most {LINE_MAX:,})")
        self.sock.send(data)

    def recv(self) -> tuple:
        try:
            n = self.sock.recv_into(self.buf)
        except OSError:
            raise EOFError from None
        if n == 0:
            raise EOFError
        return pickle.loads(memoryview(self.buf)[:n])

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()
