"""The send run's engine: one worker process per SMTP connection, the journal in the parent.

Why processes: building a message, signing its links and talking SMTP cost ~0.3 ms of Python
each; threads share one interpreter lock, so K threads never went past one core (1,400 msg/s
at K=4 in benchmarks/bench_send.py). Each worker is forked after the editions are rendered and
the plan is made, so it starts with everything prepared and holds one connection.

The parent owns the journal (one SQLite connection, single-threaded) and talks to each worker
over a pipe:

    worker -> parent   ("next", result)        the result of its last job, and "give me one"
                       ("fatal", result, why)  it cannot go on (login refused, outage, bug)
    parent -> worker   ("job", planned, message_id, lang)
                       ("ack", refusal)        the job's in-flight mark is on disk (or refused)
                       ("stop",)               no more work, or the run is stopping

Journal discipline ("never twice") is unchanged: a job's bytes go out only after the worker has
read its "ack", which the parent sends once the in-flight mark is committed (fsync'd). The mark
is queued when the job is handed out, so its fsync overlaps the worker's build and envelope.
Everything the parent read in one turn goes into one transaction: the last job's outcome and
the next job's mark share an fsync, and K workers' marks share one (group commit).

A worker whose parent dies (kill -9) is killed with it (Linux: PR_SET_PDEATHSIG) and otherwise
stops at its next read of the pipe, before any further byte: the recipient on the wire stays in
flight, i.e. uncertain, exactly as with one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import heapq
import itertools
import multiprocessing
import os
import pickle
import select
import selectors
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from newsletter import deliver, links, message
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal, Planned, Unsubscribed
from newsletter.recipients import Recipient
from newsletter.render import Edition

Prepared = dict[str, tuple[message.PreparedEdition, Edition]]  # language -> ready edition
Result = tuple[str, str]  # (kind, detail); kinds in _Parent.record

BACKOFF_FIRST = 1.0  # seconds before the first retry of a recipient; doubles each time
BACKOFF_MAX = 30.0
POLL = 0.1  # longest anyone waits before looking at the stop flag again
FLUSH_AFTER = 0.05  # outcomes alone (no mark waiting) are committed within this
LINE_MAX = 200_000  # bytes in one message between parent and worker (a job with its fields)
EARLIER = "in flight when an earlier run stopped"
DIED = "the sender process stopped mid-message"


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

    @property
    def retries(self) -> int:
        return max(1, self.cfg.smtp.retries)

    def lang(self, p: Planned) -> str:
        """The edition a planned recipient gets: theirs, else the alert's default."""
        return p.lang if p.lang in self.prepared else self.default_lang

    def build(
        self, r: Recipient, contact_id: int, lang: str, message_id: str | None = None
    ) -> bytes:
        """The message bytes for one recipient in `lang`, their links and all."""
        prep, ed = self.prepared[lang]
        member = links.edition_links(self.cfg, ed, contact_id)
        return prep.build(r, member, message_id=message_id)[1]


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


# --- the parent: journal, work list, rate, progress ---------------------------------------


class Batch:
    """Journal changes gathered in one turn of the parent's loop: one transaction, one fsync.

    `add` queues a change (with `ack`, whoever waits for it); `commit` applies them in order and
    returns (ack, error) for each waited-for change. A change the journal refuses undoes none of
    the others; the first refused change nobody waited for is kept in `error`.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.ops: list[tuple[str, tuple, object]] = []
        self.urgent = 0
        self.since = 0.0
        self.error: BaseException | None = None

    def add(self, name: str, args: tuple, ack: object = None) -> None:
        if not self.ops:
            self.since = time.monotonic()
        self.ops.append((name, args, ack))
        self.urgent += ack is not None

    def due(self) -> bool:
        """Commit now: a mark is waiting, or outcomes have waited long enough."""
        return bool(self.urgent) or (
            bool(self.ops) and time.monotonic() - self.since >= FLUSH_AFTER
        )

    def commit(self) -> list[tuple[object, BaseException | None]]:
        ops, self.ops, self.urgent = self.ops, [], 0
        errors: list[BaseException | None] = [None] * len(ops)
        try:
            with self.journal.batch():
                for i, (name, args, _) in enumerate(ops):
                    try:
                        getattr(self.journal, name)(*args)
                    except Exception as err:  # one refused change must not undo the others
                        errors[i] = err
        except Exception as err:  # the commit itself failed (disk full, locked): all of them
            errors = [e or err for e in errors]
        acks = []
        for (_, _, ack), err in zip(ops, errors, strict=True):
            if ack is not None:
                acks.append((ack, err))
            elif err is not None and self.error is None:
                self.error = err
        return acks


@dataclass(order=True, slots=True)
class _Job:
    due: float
    seq: int
    planned: Planned = field(compare=False)
    tries: int = field(default=0, compare=False)  # attempts in this run
    msg_id: str = field(default="", compare=False)  # of this attempt
    lang: str = field(default="", compare=False)


class _Work:
    """The to-do list in order, retries first once due. Nothing left and nobody busy = done.

    Jobs are made as they are taken, not all up front: 100,000 of them would cost megabytes.
    """

    def __init__(self, todo: list[Planned]) -> None:
        self.todo = todo
        self.next = 0
        self.heap: list[_Job] = []  # retries, by due time
        self.busy = 0
        self.seq = itertools.count(len(todo))

    def take(self, now: float) -> _Job | None:
        if self.heap and self.heap[0].due <= now:
            self.busy += 1
            return heapq.heappop(self.heap)
        if self.next < len(self.todo):
            self.busy += 1
            self.next += 1
            return _Job(0.0, self.next - 1, self.todo[self.next - 1])
        return None

    def done(self, job: _Job, retry_at: float | None = None) -> None:
        self.busy -= 1
        if retry_at is not None:
            job.due = retry_at
            job.seq = next(self.seq)
            heapq.heappush(self.heap, job)

    def finished(self) -> bool:
        return self.busy == 0 and not self.heap and self.next >= len(self.todo)

    def next_due(self) -> float | None:
        """When the earliest retry is due, if only retries are left to hand out."""
        if self.next < len(self.todo) or not self.heap:
            return None
        return self.heap[0].due


class _Bucket:
    """At most `rate` messages a second overall, spaced evenly."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = 0.0

    def wait(self, now: float) -> float:
        """Seconds before the next message may go (0: now)."""
        return max(0.0, self.next - now) if self.interval else 0.0

    def take(self, now: float) -> None:
        if self.interval:
            self.next = max(now, self.next) + self.interval


@dataclass
class _Worker:
    """The parent's view of one worker process."""

    conn: _Line
    process: multiprocessing.process.BaseProcess
    job: _Job | None = None  # begun: its in-flight mark is queued or on disk
    ahead: _Job | None = None  # handed out with the last ack, not begun yet
    waiting: bool = False  # asked for a job, not answered yet
    acked: bool | None = None  # the job's mark: None queued, True on disk, False refused
    stopped: bool = False  # told to stop
    alive: bool = True


@dataclass
class Tally:
    """What the workers reported, as the summary counts it."""

    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    uncertain: list[tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0
    done: int = 0  # recipients finished one way or another (the progress bar)


class _Parent:
    """The send's main process: hands out jobs, journals, counts, draws the progress bar."""

    def __init__(self, run: Run, journal: Journal | None, todo: list[Planned], cap: float) -> None:
        self.run = run
        self.batch = Batch(journal) if journal is not None else None
        self.work = _Work(todo)
        self.bucket = _Bucket(cap)
        self.tally = Tally()
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.fatal: NewsletterError | None = None

    # messages from workers

    def receive(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except EOFError:
            self.gone(w)
            return
        self.finish(w, msg[1])
        if msg[0] == "next":
            w.waiting = True
        elif msg[0] == "start":
            self.start(w)
        elif msg[0] == "fatal":  # ("fatal", result, why)
            self.unassign(w)
            self.halt(NewsletterError(msg[2]))

    def gone(self, w: _Worker) -> None:
        """A worker's pipe closed: it exited (told to, or after a fatal) or died."""
        w.alive = w.waiting = False
        self.selector.unregister(w.conn)
        self.unassign(w)
        if w.job is not None:  # it died holding a job: no result came back
            if w.acked is False:
                self.work.done(w.job)  # refused before anything went out: not reached
            else:
                self.finish(w, ("uncertain", DIED))
            if not self.stopping:
                self.halt(NewsletterError(f"a sender process died ({DIED})."))

    def unassign(self, w: _Worker) -> None:
        """The job handed out ahead goes back to the list (it was never begun)."""
        if w.ahead is not None:
            self.work.done(w.ahead, retry_at=self.run.clock.monotonic())
            w.ahead = None

    def start(self, w: _Worker) -> None:
        """The worker starts the job it was handed ahead: mark it in flight (or refuse)."""
        job, w.ahead = w.ahead, None
        if job is None:
            self.halt(NewsletterError("internal error while sending: a start without a job"))
            return
        w.job, w.acked = job, None
        if self.stopping:  # it gets nothing more: not begun, back for the next run
            w.job, w.acked = None, False
            self.work.done(job)
            self.tell(w, ("ack", ("stop", "the run is stopping"), None))
            return
        self.begin(w, job)

    def begin(self, w: _Worker, job: _Job) -> None:
        if self.batch is not None:
            job.tries += 1
            p = job.planned
            args = (self.run.alert_id, p.recipient.key, job.msg_id, job.lang)
            self.batch.add("begin", args, ack=w)

    def finish(self, w: _Worker, result: Result | None) -> None:
        """Record the outcome of w's job (None: it had none, or nothing to record)."""
        job, w.job, w.acked = w.job, None, None
        if job is None:
            return
        if result is None:
            self.work.done(job)
            return
        kind, detail = result
        p = job.planned
        key, address = p.recipient.key, p.recipient.email
        t = self.tally
        retry_at = None
        if kind == "retry":
            if job.tries >= self.run.retries:
                kind, detail = "failed", f"gave up after {job.tries} attempts: {detail}"
            else:
                self.journal("defer", key, detail)
                retry_at = self.run.clock.monotonic() + backoff(job.tries)
        if kind in ("sent", "built"):  # built: a dry run's message, handed to nobody
            if kind == "sent":
                self.journal("sent", key, detail)
            t.sent.append(address)
        elif kind == "failed":
            self.journal("fail", key, detail)
            t.failed.append((address, detail))
        elif kind == "uncertain":  # stays in flight: the server may have it
            t.uncertain.append((address, detail))
        elif kind == "suppressed":
            t.suppressed += 1
        elif kind == "stopped":  # nothing went out: pending again for the next run
            self.journal("defer", key, detail)
        t.done += kind in ("sent", "built", "failed", "uncertain", "suppressed")
        self.work.done(job, retry_at)

    def journal(self, name: str, key: str, reply: str) -> None:
        if self.batch is not None:
            self.batch.add(name, (self.run.alert_id, key, reply))

    def halt(self, err: NewsletterError) -> None:
        if self.fatal is None:
            self.fatal = err
        self.stop()

    def stop(self) -> None:
        """No more jobs: workers finish the message on the wire, then exit."""
        self.stopping = True
        for w in self.workers:
            if w.alive and not w.stopped and w.job is None:
                self.tell(w, ("stop",))
                w.stopped, w.waiting = True, False

    def tell(self, w: _Worker, msg: tuple) -> None:
        with contextlib.suppress(OSError):  # it died: its EOF is handled by receive()
            w.conn.send(msg)

    # handing out jobs

    def dispatch(self) -> float | None:
        """Answer the workers waiting for a job; returns seconds until one may go, if waiting."""
        wait: float | None = None
        for w in self.workers:
            if not w.waiting:
                continue
            if self.stopping:
                self.stop()
                break
            now = self.run.clock.monotonic()
            if (left := self.bucket.wait(now)) > 0:
                return left
            job = self.work.take(now)
            if job is None:
                if self.work.finished():
                    self.stop()
                    break
                due = self.work.next_due()
                if due is not None:
                    wait = max(0.0, due - now)
                continue
            self.bucket.take(now)
            self.hand(w, job)
        return wait

    def spec(self, job: _Job) -> tuple | None:
        """What a worker needs of a job, as plain values (pickled in microseconds); None when
        the row cannot travel (recorded as failed)."""
        p = job.planned
        job.lang = self.run.lang(p)
        job.msg_id = self.run.prepared[job.lang][0].new_message_id()
        r = p.recipient
        spec = ((r.email, r.key, r.name, r.language, r.fields, r.line), p.contact_id)
        chars = sum(map(len, r.fields.values())) + sum(map(len, r.fields)) + len(r.name)
        size = len(pickle.dumps(spec)) if 4 * chars > LINE_MAX // 4 else 0  # only a big row
        if size > LINE_MAX // 2:
            why = f"not sent: {size:,} bytes of recipient data (at most {LINE_MAX // 2:,})"
            self.tally.failed.append((r.email, why))
            self.tally.done += 1
            self.journal("fail", r.key, why)
            self.work.done(job)
            return None
        return (*spec, job.msg_id, job.lang)

    def hand(self, w: _Worker, job: _Job) -> None:
        spec = self.spec(job)
        if spec is None:
            return
        w.job, w.waiting, w.acked = job, False, None
        self.tell(w, ("job", spec))
        self.begin(w, job)

    def ahead(self, w: _Worker) -> tuple | None:
        """A job to hand out with an ack, so the worker never waits for its next one.

        Not with a rate cap (the cap decides when each job goes), nor when stopping.
        """
        if self.stopping or self.bucket.interval or w.ahead is not None:
            return None
        while (job := self.work.take(self.run.clock.monotonic())) is not None:
            spec = self.spec(job)
            if spec is not None:
                w.ahead = job
                return spec
        return None

    def commit(self) -> None:
        if self.batch is None or not self.batch.ops:
            return
        for w, err in self.batch.commit():
            assert isinstance(w, _Worker)
            if w.job is None or not w.alive:
                continue
            w.acked = err is None
            if err is None:
                self.tell(w, ("ack", None, self.ahead(w)))
                continue
            if isinstance(err, Unsubscribed):
                refusal = ("unsubscribed", str(err))
            elif isinstance(err, NewsletterError):
                refusal = ("error", err.message)
            else:  # the journal failed (disk error, a bug): stop the run
                refusal = ("error", f"internal error while sending: {err!r}")
            self.tell(w, ("ack", refusal, None))

    # the loop

    def loop(self, bar: Any, interrupted: Callable[[], bool]) -> None:
        shown = 0
        drawn = time.monotonic()
        while True:
            if interrupted() and not self.stopping:
                click.echo("\nInterrupted: finishing the messages on the wire…", err=True)
                self.stop()
            live = [w for w in self.workers if w.alive]
            if not live:
                break
            wait = self.dispatch()  # jobs go out first: their marks' fsync overlaps their build
            if self.batch is not None and self.batch.due():
                self.commit()
            if self.tally.done > shown and time.monotonic() - drawn >= POLL:
                bar.update(self.tally.done - shown)
                shown, drawn = self.tally.done, time.monotonic()
            timeout = 0.0 if wait else POLL
            if self.batch is not None and self.batch.ops:  # outcomes waiting for a commit
                timeout = min(timeout, max(0.0, self.batch.since + FLUSH_AFTER - time.monotonic()))
            ready = self.selector.select(timeout)
            for key, _ in ready:
                self.receive(key.data)
            if wait and not ready:
                # Only the rate cap or a retry's backoff holds the next job back.
                self.run.clock.sleep(min(wait, POLL))
        if self.batch is not None:
            self.commit()
        if self.tally.done > shown:
            bar.update(self.tally.done - shown)


# --- the worker process --------------------------------------------------------------------


class _ParentGone(BaseException):
    """The parent's end of the pipe closed: send nothing more, exit."""


class _Fatal(Exception):
    def __init__(self, result: Result | None, why: str) -> None:
        super().__init__(why)
        self.result, self.why = result, why


class _Ack:
    """A job's in-flight mark, as the worker waits for it. Calling it returns once the parent
    says the mark is on disk (raises if refused); the transport calls it after the server's 354,
    so the message's bytes go out only then. Later calls give the same answer."""

    __slots__ = ("ahead", "conn", "error", "read", "refused")

    def __init__(self, conn: _Line) -> None:
        self.conn = conn
        self.read = False
        self.refused = False
        self.error: BaseException | None = None
        self.ahead: tuple | None = None  # the next job, handed out with the ack

    def __call__(self) -> None:
        if not self.read:
            self.read = True
            msg = _recv(self.conn)
            if msg[0] != "ack":
                raise _ParentGone
            self.ahead = msg[2]
            if msg[1] is not None:
                self.refused = True
                kind, why = msg[1]
                if kind == "unsubscribed":
                    self.error = Unsubscribed(why)
                elif kind == "stop":
                    self.error = _ParentGone()  # stopping: this job was not begun; just go
                else:
                    self.error = NewsletterError(why)
        if self.error is not None:
            raise self.error


def _recv(conn: _Line) -> tuple:
    try:
        return conn.recv()
    except EOFError:
        raise _ParentGone from None


class _Sender:
    """One worker process: one connection, one job at a time, as the parent hands them out."""

    def __init__(self, run: Run, transport: deliver.Transport, conn: _Line) -> None:
        self.run = run
        self.transport = transport
        self.conn = conn

    def main(self) -> None:
        result: Result | None = None
        ahead: tuple | None = None
        try:
            while True:
                if not self.run.dry_run and not self.transport.connected:
                    if result is not None:  # report it before the reconnect's backoff
                        self.conn.send(("result", result))
                        result = None
                    if not self.connect():
                        return
                if ahead is None:
                    self.conn.send(("next", result))
                    msg = _recv(self.conn)
                    if msg[0] != "job":
                        return
                    spec = msg[1]
                else:
                    self.conn.send(("start", result))
                    spec, ahead = ahead, None
                result = None
                values, contact_id, msg_id, lang = spec
                mark = _Ack(self.conn)
                result = self.one(Recipient(*values), contact_id, msg_id, lang, mark)
                ahead = mark.ahead
        except _ParentGone:
            return
        except _Fatal as err:
            self.report(err.result, err.why)
        except NewsletterError as err:
            self.report(result, err.message)
        except Exception as err:  # a bug: stop cleanly, never leave the run hanging
            self.report(result, f"internal error while sending: {err!r}")
        finally:
            self.transport.close()

    def report(self, result: Result | None, why: str) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("fatal", result, why))

    def connect(self) -> bool:
        """(Re)connect before asking for a job; an outage stops the run, sends nothing."""
        clock = self.run.clock
        retries = self.run.retries
        for attempt in range(1, retries + 1):
            try:
                self.transport.open()
                return True
            except deliver.Retry as err:
                if attempt == retries:
                    raise NewsletterError(
                        f"{err} ({attempt} attempts). Is the SMTP server down? Nothing more was "
                        "sent; run the same command again later."
                    ) from None
            until = clock.monotonic() + backoff(attempt)
            while (left := until - clock.monotonic()) > 0:
                if self.conn.poll(0):  # told to stop while waiting
                    _recv(self.conn)
                    return False
                clock.sleep(min(left, POLL))
        return False

    def one(self, r: Recipient, contact_id: int, msg_id: str, lang: str, mark: _Ack) -> Result:
        """Deliver one job; the result goes back to the parent with the next request."""
        if self.run.dry_run:
            try:
                data = self.run.build(r, contact_id, lang)
            except (NewsletterError, ValueError) as err:
                return ("failed", f"not built: {err}")
            return ("built", f"{len(data)} bytes")
        try:
            return self.marked(r, contact_id, msg_id, lang, mark)
        except Unsubscribed:
            # Suppressed since the plan (begin checks it in the mark's own transaction): if
            # the envelope had gone, the transport cut the line before the message's bytes.
            return ("suppressed", "unsubscribed during the run")

    def marked(self, r: Recipient, contact_id: int, msg_id: str, lang: str, mark: _Ack) -> Result:
        address = r.email
        try:  # built while the mark's fsync runs (it is durable before any byte goes out)
            data = self.run.build(r, contact_id, lang, msg_id)
        except (NewsletterError, ValueError) as err:
            mark()
            return ("failed", f"not built: {err}")
        mail_from = self.run.prepared[lang][0].mail_from
        try:
            # The transport calls mark() between the envelope's 354 and the message bytes.
            code, text = self.transport.send(mail_from, address, data, before_data=mark)
        except deliver.Uncertain as err:
            # Stays in flight: the server may have it. Sending again could deliver it twice.
            return ("uncertain", str(err))
        except deliver.Retry as err:
            mark()
            return ("retry", str(err))
        except NewsletterError as err:  # refused before anything went out (login, envelope)
            if mark.refused:  # the mark itself failed: nothing was sent, nothing to undo
                raise _Fatal(None, err.message) from None
            mark()
            raise _Fatal(("stopped", "not sent: the run stopped"), err.message) from None
        mark()  # the envelope may have been refused before the data: still wait for it
        reply = f"{code} {text}"
        if 200 <= code < 300:
            return ("sent", reply)
        if code >= 500:
            return ("failed", reply)
        return ("retry", reply)


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the parent dies (kill -9 included)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


def _worker_main(
    run: Run, transport: deliver.Transport, conn: _Line, close: list[_Line], parent: int
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _die_with_parent(parent)
    for c in close:  # the parent's ends: the parent's death must read as EOF here
        c.close()
    _Sender(run, transport, conn).main()


@contextlib.contextmanager
def _ctrl_c() -> Iterator[Callable[[], bool]]:
    """Ctrl-C sets a flag the loop looks at (no exception in the middle of a commit)."""
    hit: list[bool] = []
    try:
        old = signal.signal(signal.SIGINT, lambda *_: hit.append(True))
    except ValueError:  # not the main thread: no signal handling here
        yield lambda: False
        return
    try:
        yield lambda: bool(hit)
    finally:
        signal.signal(signal.SIGINT, old)


def deliver_all(
    run: Run,
    journal: Journal | None,
    todo: list[Planned],
    transports: list[deliver.Transport],
    cap: float,
) -> tuple[Tally, bool, NewsletterError | None, float]:
    """One worker process per transport over the to-do list.

    Returns (tally, interrupted, fatal error or None, seconds spent). `journal` is None for a
    dry run (nothing is written). Transports must not be connected yet: each worker opens its
    own, so no connection is shared across a fork.
    """
    parent = _Parent(run, journal, todo, cap)
    if not todo:
        return parent.tally, False, None, 0.0
    ctx = multiprocessing.get_context("fork")
    sys.stdout.flush()
    sys.stderr.flush()
    gc.collect()
    gc.freeze()  # the workers' collector leaves the parent's objects (and their pages) alone
    try:
        ends: list[_Line] = []
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks (a test's SMTP server);
            # a worker touches none of their state.
            warnings.simplefilter("ignore", DeprecationWarning)
            for i, transport in enumerate(transports):
                mine, theirs = _Line.pair()
                proc = ctx.Process(
                    target=_worker_main,
                    args=(run, transport, theirs, [*ends, mine], os.getpid()),
                    name=f"newsletter-send-{i}",
                    daemon=True,
                )
                proc.start()
                theirs.close()
                ends.append(mine)
                parent.workers.append(w := _Worker(mine, proc))
                parent.selector.register(mine, selectors.EVENT_READ, w)
    finally:
        gc.unfreeze()
    start = time.monotonic()
    try:
        with (
            _ctrl_c() as interrupted,
            click.progressbar(
                length=len(todo),
                label="Building" if run.dry_run else "Sending",
                file=sys.stderr,
                show_pos=True,
                show_eta=True,
                item_show_func=lambda _: _rate(parent.tally.done, start),
            ) as bar,
        ):
            parent.loop(bar, interrupted)
            was_interrupted = interrupted()
    finally:
        for w in parent.workers:
            w.process.join(timeout=run.cfg.smtp.timeout + 5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
    elapsed = time.monotonic() - start
    if parent.batch is not None and parent.batch.error is not None:
        raise parent.batch.error
    return parent.tally, was_interrupted, parent.fatal, elapsed


def _rate(done: int, start: float) -> str:
    elapsed = time.monotonic() - start
    return f"{done / elapsed:.0f}/s" if elapsed > 0 and done else ""
