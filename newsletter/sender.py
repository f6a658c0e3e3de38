"""The send's worker: one per SMTP connection (a process, or with one connection a thread
of the parent), with its own flight log; the parent's side is pool.py, the line between them
wire.py.

Per message a worker pipelines (RFC 2920) its envelope behind the previous message's data, in
the same write when it was built in time (it is built while the server reads the previous
one: _Sender.prepare_next), so one read brings the previous reply and this envelope's 354;
only then is this recipient marked (with the previous outcome), and only then do its bytes go.
A connection has one recipient in flight, unless its disk is slow: when a sync of the flight
log takes SYNC_SHARE of a message's own work or more, the worker marks the next few recipients
ahead of their turn in batches (at most MARKS_AHEAD; one write and one fdatasync a batch) and
a sync thread puts the marks on disk while earlier messages go (_Sender.mark_ahead); each
message still waits, if it must, for its own mark to be on disk.

A shared stop flag (Ctrl-C, a fatal error) makes workers finish the message on the wire and
leave their queued jobs untouched. A worker process whose parent dies (kill -9) is killed with
it (Linux: PR_SET_PDEATHSIG) and otherwise stops at its next read of the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import math
import mmap
import os
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter import deliver
from newsletter.errors import NewsletterError
from newsletter.flightlog import FlightLog
from newsletter.journal import BUSY_TIMEOUT
from newsletter.recipients import Recipient
from newsletter.wire import POLL, Result, Run, _Line, backoff

REPORT_EVERY = 8  # results a worker gathers before it reports them (sooner when it runs dry)
MARKS_AHEAD = 8  # at most this many queued recipients marked in flight ahead of their turn
SYNC_SHARE = 0.2  # marks go ahead only when a sync takes this share of a message's work or more
QUICK_WORK = 0.005  # and only while a message's own work is under this (s): a fast server


class _ParentGone(BaseException):
    """The parent's end of the socket closed: send nothing more, exit."""


class _Fatal(Exception):
    """The worker cannot go on: `relay` when its relay is at fault (it refuses or drops the
    connection, the login, the sender): a pool drains that relay and goes on with the others."""

    def __init__(self, result: Result | None, why: str, relay: bool = False) -> None:
        super().__init__(why)
        self.result, self.why, self.relay = result, why, relay


class _Mark:
    """A job's in-flight mark, for servers without PIPELINING and the outbox: the transport's
    send() calls it after the 354, before the message's bytes; the first call writes it (and
    returns once it is on disk), later calls are free."""

    __slots__ = ("args", "done", "flight", "refused")

    def __init__(self, flight: FlightLog, args: tuple) -> None:
        self.flight, self.args = flight, args
        self.done = self.refused = False

    def __call__(self) -> None:
        if self.done:
            return
        try:
            self.flight.mark(*self.args)
        except OSError as err:  # not the connection's fault: never taken for a network error
            self.refused = True
            raise NewsletterError(
                f"{self.flight.path}: cannot write ({err.strerror or err}). Nothing more was sent."
            ) from None
        except BaseException:
            self.refused = True
            raise
        self.done = True


class _Suppressions:
    """Addresses unsubscribed since the run's plan (the plan skipped the earlier ones).

    Before each message it looks whether the state file changed and reads new suppressions
    only then: a one-click unsubscribe during a long run stops that address's copy unless it is
    already on the wire, without a query per message. The look is the change counter SQLite
    bumps in the WAL index at every write transaction (iChange, 4 bytes at offset 8 of the
    `-shm` file: sqlite.org/walformat.html, 2.1), read from a mapping: no system call. Where
    that file cannot be mapped, PRAGMA data_version (two fcntl calls) answers instead.
    """

    def __init__(self, state: Path, since: str) -> None:
        self.db = sqlite3.connect(state, timeout=BUSY_TIMEOUT, isolation_level=None)
        self.since = since
        self.version = -1  # read once at the start
        self.keys: set[str] = set()
        self.shm: mmap.mmap | None = None
        self.change = b""
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(f"{state}-shm", os.O_RDONLY)
            try:
                self.shm = mmap.mmap(fd, 136, prot=mmap.PROT_READ)  # the WAL-index header
            finally:
                os.close(fd)

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """Now, not when the collector gets to it: a worker thread's connection closed later
        (the last one on the file) would checkpoint into a state file that may have changed
        hands since."""
        if self.shm is not None:
            self.shm.close()
            self.shm = None
        self.db.close()

    def __contains__(self, key: str) -> bool:
        if self.shm is not None:
            change = self.shm[8:12]
            if change == self.change:
                return key in self.keys
            self.change = change
        if (version := self._version()) != self.version:
            self.version = version
            self.keys = {
                k
                for (k,) in self.db.execute(
                    "SELECT key FROM suppressions WHERE created_at >= ?", (self.since,)
                )
            }
        return key in self.keys


@dataclass(slots=True)
class _Pipelined:
    """A job as a worker carries it: the recipient, its attempt and, once built, its bytes."""

    r: Recipient
    lang: str
    msg_id: str
    attempts: int
    tries: int
    data: bytes = b""
    mail_from: str = ""
    sent: bool = False  # its envelope went behind the previous message's data (prepare_next)


class _Sender:
    """One worker process: one connection, its flight log, the jobs the parent queues for it."""

    def __init__(
        self,
        run: Run,
        transport: deliver.Transport,
        conn: _Line,
        flight: Path | None,
        planned_at: str,
        stop: Any,
    ) -> None:
        self.run = run
        self.transport = transport
        self.conn = conn
        self.stop = stop
        self.tries = 0  # attempts of the current job in this run
        self.told_stop = False  # read the parent's "stop" (or its end closed)
        self.results: list[Result] = []  # not reported yet
        self.suppressions: _Suppressions | None = None
        self.pending: _Pipelined | None = None  # data sent (after its mark), reply not read
        self.ahead: _Pipelined | None = None  # the next queued job, built early (prepare_next)
        self.queue: deque[tuple] = deque()  # jobs the parent handed out, not begun
        self.flight: FlightLog | None = None
        # Marked in flight ahead of their turn (see mark_ahead): message id -> the log's end
        # after the mark (on disk once FlightLog.wait(end) returns).
        self.premarked: dict[str, int] = {}
        self.work_time = 0.0  # seconds of a message's own work (moving average; no sync waits)
        self.begun = 0  # jobs begun on this connection
        self.waited = 0.0  # seconds the current message waited for its mark to be on disk
        self.batching = False  # marks go ahead in batches: outcomes are written as they come
        if flight is not None:
            self.flight = FlightLog(flight)
            self.suppressions = _Suppressions(run.cfg.path("state"), planned_at)

    def main(self) -> None:
        try:
            while not self.stop.value:
                idle = not self.queue and not self.conn.poll(0)  # nothing to go on with
                if self.pending is not None and idle:
                    self.settle_pending()  # nothing to pipeline behind it: read its reply now
                if self.results and (len(self.results) >= REPORT_EVERY or idle):
                    self.conn.send(("done", self.results))
                    self.results = []
                if not self.queue:
                    if not self.told_stop:
                        self.take(_recv(self.conn))
                    if self.told_stop or self.stop.value:
                        return
                if not self.run.dry_run and not self.transport.connected and not self.connect():
                    return
                values, person, msg_id, lang, attempts, self.tries = self.queue.popleft()
                start, self.waited = time.monotonic(), 0.0
                self.one(values, person, msg_id, lang, attempts)
                took = time.monotonic() - start - self.waited
                self.begun += 1
                if self.begun > 1:  # the first job's time lacks the wait for its data's reply
                    # (read with the next one's): taken in, it made a slow server look quick
                    # (20 ms a message looked like 4: a batch of marks went ahead, and a crash
                    # left them uncertain)
                    self.work_time = took if not self.work_time else self.work_time + (
                        took - self.work_time
                    ) / 8
        except _ParentGone:
            self.told_stop = True
            return
        except _Fatal as err:
            self.flush_results()
            self.report(err.result, err.why, err.relay)
        except NewsletterError as err:  # from the transport: the login, TLS, the server
            self.settle_pending()
            self.flush_results()
            self.report(None, err.message, relay=True)
        except Exception as err:  # a bug: stop cleanly, never leave the run hanging
            self.settle_pending()
            self.flush_results()
            self.report(None, f"internal error while sending: {err!r}")
        finally:
            self.settle_pending()  # the message on the wire is finished, not abandoned
            self.flush_results()
            self.transport.close()
            if self.flight is not None:
                self.unmark_queued()
                self.flight.close()
            if self.suppressions is not None:
                self.suppressions.close()
            self.drain()

    def take(self, msg: tuple) -> None:
        """A message from the parent: more jobs, or "stop" (no more work)."""
        if msg[0] == "jobs":
            self.queue.extend(msg[1])
        else:
            self.told_stop = True

    def more_jobs(self) -> None:
        """The jobs the parent has sent meanwhile, without waiting for them (the queue ran
        dry): so the next message can be built in time to go behind this one (prepare_next)."""
        try:
            ready = not self.told_stop and self.conn.poll(0)
        except (OSError, ValueError):
            return  # the parent's end is gone: the main loop finds out
        if ready:
            self.take(_recv(self.conn))

    def unmark_queued(self) -> None:
        """Jobs marked ahead that will not go in this run: back to pending in the log."""
        assert self.flight is not None
        for values, _, msg_id, lang, _, _ in self.queue:
            if self.premarked.pop(msg_id, None) is not None:
                self.flight.outcome(self.run.alert_id, values[1], "pending", "", lang)
        self.premarked.clear()

    def drain(self) -> None:
        """Read what the parent still sends until its "stop": a socket closed with unread data
        resets the parent's end, which could lose this worker's last report."""
        deadline = time.monotonic() + self.run.cfg.smtp.timeout + 5
        while not self.told_stop and time.monotonic() < deadline:
            try:
                if self.conn.poll(POLL) and self.conn.recv()[0] == "stop":
                    return
            except (EOFError, OSError):
                return

    def flush_results(self) -> None:
        if self.results:
            with contextlib.suppress(OSError):
                self.conn.send(("done", self.results))
            self.results = []

    def report(self, result: Result | None, why: str, relay: bool = False) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("fatal", result, why, relay))

    def connect(self) -> bool:
        """(Re)connect before the next job; an outage stops the run, sends nothing."""
        clock = self.run.clock
        retries = self.run.retries
        for attempt in range(1, retries + 1):
            try:
                self.transport.open()
                return True
            except deliver.Retry as err:
                if attempt == retries:
                    raise _Fatal(
                        ("skipped", ""),
                        f"{err} ({attempt} attempts). Is the SMTP server down? Nothing more was "
                        "sent; run the same command again later.",
                        relay=True,
                    ) from None
            until = clock.monotonic() + backoff(attempt)
            while (left := until - clock.monotonic()) > 0:
                if self.stop.value:
                    raise _Fatal(("skipped", ""), "stopped") from None
                clock.sleep(min(left, POLL))
        return False

    def suppressed(self, key: str) -> bool:
        """Unsubscribed since the plan (a one-click unsubscribe during a long run)?"""
        assert self.suppressions is not None
        return key in self.suppressions

    def one(self, values: tuple, person: bytes, msg_id: str, lang: str, attempts: int) -> None:
        """Deliver one job (`values`: its Recipient's fields); its result (and the one before
        it, when pipelined) is queued for the parent, in the order the jobs came."""
        ready, self.ahead = self.ahead, None  # built early (prepare_next)?
        if ready is not None and ready.msg_id != msg_id:  # not this job's (never, in order)
            ready = None
        transport = self.transport
        if ready is not None and ready.sent:  # its envelope is out, behind the last data
            assert isinstance(transport, deliver.SmtpTransport)
            self.pipelined(ready, person, transport)
            return
        r = Recipient(*values) if ready is None else ready.r
        if self.run.dry_run:
            try:
                data = self.run.build(r, person, lang)
            except (NewsletterError, ValueError) as err:
                self.results.append(("failed", f"not built: {err}"))
                return
            self.results.append(("built", f"{len(data)} bytes"))
            return
        if self.suppressed(r.key):
            self.settle_pending()
            if self.premarked.pop(msg_id, None) is not None:
                assert self.flight is not None
                self.flight.outcome(self.run.alert_id, r.key, "pending", "", lang)
            self.results.append(("suppressed", "unsubscribed during the run"))
            return
        msg = ready or _Pipelined(r, lang, msg_id, attempts, self.tries)
        if isinstance(transport, deliver.SmtpTransport) and transport.pipelining:
            self.pipelined(msg, person, transport)
            return
        self.settle_pending()
        self.record(msg, self.marked(r, person, msg_id, lang, attempts))

    def record(self, msg: _Pipelined, result: Result) -> None:
        """Keep a job's outcome in the flight log (with the next mark) and for the parent."""
        assert self.flight is not None
        kind, detail = result
        if kind in ("sent", "failed", "retry"):
            self.flight.outcome(self.run.alert_id, msg.r.key, kind, detail, msg.lang, msg.attempts)
            if self.batching:  # no mark of its own follows soon: written now (not synced)
                with contextlib.suppress(OSError):
                    self.flight.put()
        self.results.append(result)

    def pipelined(self, msg: _Pipelined, person: bytes, transport: deliver.SmtpTransport) -> None:
        """The message's envelope goes out behind the previous message's data, in the same
        write when the message was built in time (prepare_next), and the replies to both come
        back in one read (RFC 2920): one write, one wait per message. While the server reads
        them, the next queued message is built, so that its envelope can go behind this one's
        data in turn. The previous message was marked in flight before its data left; this
        one is marked only after the previous one's reply is in, so a connection has one in
        flight (unless marked ahead: mark_ahead)."""
        assert self.flight is not None
        r = msg.r
        self.mark_ahead(msg)
        marked = self.premarked.pop(msg.msg_id, None)  # its mark's end in the log, if written
        if not msg.data:
            try:
                msg.data = self.run.build(r, person, msg.lang, msg.msg_id)
            except (NewsletterError, ValueError) as err:
                self.settle_pending()
                self.record(msg, ("failed", f"not built: {err}"))
                return
            msg.mail_from = self.run.mail_from(msg.lang, person)
        mail_from = msg.mail_from
        if not msg.sent:
            for address in (mail_from, r.email):
                if not deliver.envelope_ok(address):
                    self.settle_pending()
                    self.record(
                        msg, ("failed", f"{address!r}: not an address for the SMTP envelope.")
                    )
                    return
        prev, self.pending = self.pending, None
        try:
            final, env, sender_refused = transport.exchange(
                prev is not None,
                mail_from,
                r.email,
                len(msg.data),
                sent=msg.sent,
                meanwhile=self.prepare_next,
            )
        except deliver.Broken as err:
            if prev is not None:
                self.settle(prev, err.final, str(err))
            self.record(msg, self.again(str(err), msg.tries))  # never marked: safe to resend
            return
        if prev is not None:
            self.settle(prev, final, "")
        assert env is not None
        code, text = env
        if code == 354:
            try:
                if marked is None:
                    self.flight.mark(self.run.alert_id, r.key, msg.msg_id, msg.lang, msg.attempts)
                elif not self.flight.synced(marked):
                    start = time.monotonic()
                    self.flight.wait(marked)
                    self.waited += time.monotonic() - start
            except OSError as err:
                transport.abort()  # the server waits for the data: cut, it gets none
                raise _Fatal(
                    None,
                    f"{self.flight.path}: cannot write ({err.strerror or err}). "
                    "Nothing more was sent.",
                ) from None
            nxt = self.ahead
            then = b""
            if nxt is not None:  # built in time: its envelope goes in the same write
                then = transport.envelope(nxt.mail_from, nxt.r.email, len(nxt.data))
            try:  # dot_safe: as PreparedEdition.build makes it
                transport.write_data(msg.data, dot_safe=True, then=then)
            except deliver.Broken as err:
                self.settle(msg, None, str(err))
                return
            if nxt is not None:
                nxt.sent = True
            self.pending = msg  # its reply comes with the next envelope's, or alone
            return
        reply = f"{code} {text}"
        try:
            if sender_refused:
                transport.check_sender(code, text, mail_from)
        except NewsletterError as err:
            self.flight.outcome(
                self.run.alert_id, r.key, "retry", "not sent: the run stopped", msg.lang
            )
            raise _Fatal(("stopped", ""), err.message, relay=True) from None
        self.record(msg, ("failed", reply) if code >= 500 else self.again(reply, msg.tries))

    def mark_ahead(self, msg: _Pipelined) -> None:
        """When a sync of the flight log takes longer than a message's own work, mark this
        message and the next queued ones in flight ahead of their turn, a batch in one write
        that the sync thread puts on disk with one fdatasync while the connection carries the
        messages before them (group commit), so no message waits for a sync of its own and one
        sync serves several messages. A new batch (up to MARKS_AHEAD queued recipients) is
        written when fewer are marked than go by during two syncs (a mark written just after a
        sync began is on disk at the end of the next one). None while a sync takes less than
        SYNC_SHARE of a message's work (a fast disk) or a message takes QUICK_WORK or more (a
        slow or distant server: there the sync is a small part, and exactness wins), and then
        the one message on the wire is the only one in flight, as without this.

        Still never twice: every message's mark is on disk before its first byte goes (the
        caller waits for it). The cost is in a crash: the recipients marked ahead whose turn had
        not come are uncertain too (at most MARKS_AHEAD + 1 per connection); a run that stops
        any other way writes them back as pending (unmark_queued)."""
        assert self.flight is not None
        flight = self.flight
        work = self.work_time
        if not work or work > QUICK_WORK or flight.sync_time < SYNC_SHARE * work:
            return
        self.batching = True
        queue, premarked = self.queue, self.premarked
        if msg.msg_id in premarked:
            # a new batch when fewer than that are marked, and never fewer than half of
            # MARKS_AHEAD at once (on a disk that slow, syncs are shared all the more)
            lead = min(MARKS_AHEAD // 2, math.ceil(2 * flight.sync_time / work), len(queue))
            if not lead or queue[lead - 1][2] in premarked:  # marked in queue order
                return
        alert_id = self.run.alert_id
        rows = [] if msg.msg_id in premarked else [(msg.r.key, msg.msg_id, msg.lang, msg.attempts)]
        for values, _, msg_id, lang, attempts, _ in itertools.islice(queue, MARKS_AHEAD):
            if msg_id not in premarked:
                rows.append((values[1], msg_id, lang, attempts))
        try:
            end = flight.mark_many((alert_id, *row) for row in rows)
        except OSError:
            return  # nothing is sent on a mark that failed: its own turn writes it, or stops
        for _, msg_id, _, _ in rows:
            premarked[msg_id] = end

    def settle(self, msg: _Pipelined, final: deliver.Reply | None, why: str) -> None:
        """The outcome of a message whose data went out: its reply, or uncertain without one."""
        if final is None:  # stays in flight: the server may have it; resending could double it
            self.results.append(("uncertain", f"{why} after the message was sent"))
            return
        code, text = final
        reply = f"{code} {text}"
        if 200 <= code < 300:
            self.record(msg, ("sent", reply))
        elif code >= 500:
            self.record(msg, ("failed", reply))
        else:
            self.record(msg, self.again(reply, msg.tries))

    def prepare_next(self) -> None:
        """Build the next queued message now, while the server reads what went (called by
        exchange between its write and its read), so that its envelope can go in the same write
        as this message's data. Only a message that can go as it is: one unsubscribed since the
        plan, one that cannot be built or has no envelope address is left for its own turn
        (which reports it, in order). Its suppression is looked at now, before its envelope
        goes; its in-flight mark still comes only after its 354, before its data."""
        self.ahead = None
        if not self.queue:
            self.more_jobs()
        if not self.queue or self.stop.value:
            return
        values, person, msg_id, lang, attempts, tries = self.queue[0]
        r = Recipient(*values)
        if self.suppressed(r.key):
            return
        try:
            data = self.run.build(r, person, lang, msg_id)
        except (NewsletterError, ValueError):
            return
        mail_from = self.run.mail_from(lang, person)
        if deliver.envelope_ok(mail_from) and deliver.envelope_ok(r.email):
            self.ahead = _Pipelined(r, lang, msg_id, attempts, tries, data, mail_from)

    def settle_pending(self) -> None:
        """Read the reply to the pending message's data (nothing else to pipeline with it).

        When the next message's envelope went behind that data and its turn will not come (the
        run stops), its replies are read too, and a server that waits for its data (354) gets
        none: the line is cut, and the server discards the transaction (never "." alone, which
        would deliver an empty message)."""
        msg, self.pending = self.pending, None
        if msg is None:
            return
        assert isinstance(self.transport, deliver.SmtpTransport)
        ahead, self.ahead = self.ahead, None
        abandon = ahead is not None and ahead.sent
        try:
            if abandon:
                assert ahead is not None
                final, env, _ = self.transport.exchange(
                    True, ahead.mail_from, ahead.r.email, len(ahead.data), sent=True
                )
                if env is not None and env[0] == 354:
                    self.transport.abort()
            else:
                final, _, _ = self.transport.exchange(True)
        except deliver.Broken as err:
            self.settle(msg, err.final, str(err))
            return
        self.settle(msg, final, "")

    def marked(
        self, r: Recipient, person: bytes, msg_id: str, lang: str, attempts: int
    ) -> Result:
        assert self.flight is not None
        address = r.email
        mark = _Mark(self.flight, (self.run.alert_id, r.key, msg_id, lang, attempts))
        try:  # built before the envelope: the envelope, the mark and the data follow at once
            data = self.run.build(r, person, lang, msg_id)
        except (NewsletterError, ValueError) as err:
            mark()
            return ("failed", f"not built: {err}")
        mail_from = self.run.mail_from(lang, person)
        try:
            code, text = self.transport.send(mail_from, address, data, before_data=mark)
        except deliver.Uncertain as err:
            # Stays in flight: the server may have it. Sending again could deliver it twice.
            return ("uncertain", str(err))
        except deliver.Retry as err:
            mark()
            return self.again(str(err), self.tries)
        except NewsletterError as err:  # refused before anything went out (login, envelope)
            if mark.refused:  # the mark itself failed: nothing was sent, nothing to undo
                raise _Fatal(None, err.message) from None
            mark()
            self.flight.outcome(
                self.run.alert_id, r.key, "retry", "not sent: the run stopped", lang
            )
            raise _Fatal(("stopped", ""), err.message, relay=True) from None
        mark()  # the envelope may have been refused before the data: still mark the attempt
        reply = f"{code} {text}"
        if 200 <= code < 300:
            return ("sent", reply)
        if code >= 500:
            return ("failed", reply)
        return self.again(reply, self.tries)

    def again(self, reply: str, tries: int) -> Result:
        """A 4xx, a timeout or a drop before the data: retry later, a bounded number of times."""
        if tries >= self.run.retries:
            return ("failed", f"gave up after {tries} attempts: {reply}")
        return ("retry", reply)


def _recv(conn: _Line) -> tuple:
    try:
        return conn.recv()
    except EOFError:
        raise _ParentGone from None


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the parent dies (kill -9 included)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _worker_main(
    run: Run,
    make: Callable[[], deliver.Transport],
    conn: _Line,
    close: list[_Line] | None,
    parent: int,
    stop: Any,
) -> None:
    """A worker waits for ("start", flight log, time of the plan) or ("stop",).

    `close` is None for a worker thread (one connection): it shares the parent's process, and
    closes its end of the line when it is done, which the parent reads as its exit.
    """
    if close is None:
        try:
            _worker(run, make, conn, stop)
        finally:
            conn.close()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(parent)
    for c in close:  # the parent's ends: the parent's death must read as EOF here
        c.close()
    _worker(run, make, conn, stop)


def _worker(run: Run, make: Callable[[], deliver.Transport], conn: _Line, stop: Any) -> None:
    try:
        msg = conn.recv()
    except EOFError:
        return
    if msg[0] != "start":
        return
    _, flight, planned_at = msg
    try:
        if run.ready is not None and not run.prepared:
            run.ready(run)
        sender = _Sender(run, make(), conn, flight, planned_at, stop)
    except NewsletterError as err:
        sender = None
        why = err.message
    except (OSError, sqlite3.Error) as err:
        sender = None
        why = f"{flight}: cannot create the flight log ({err})."
    if sender is None:
        with contextlib.suppress(OSError):
            conn.send(("fatal", None, why, False))  # this machine's fault, not the relay's
        with contextlib.suppress(EOFError, OSError):
            while conn.recv()[0] != "stop":  # until the parent has read it (see _Sender.drain)
                pass
        return
    sender.main()
