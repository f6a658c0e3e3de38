"""The send run's engine: one worker per SMTP connection, each with its own flight log.

Why processes: building a message, signing its links and talking SMTP cost ~0.3 ms of Python
each; threads share one interpreter lock, so K threads never went past one core (1,400 msg/s
at K=4 in benchmarks/bench_send.py). With K > 1 connections each worker is a process, forked
(Pool) before the recipient list is read, so it never shares the list; a send forks them while
the editions are still being checked in another process, and each worker takes them at its
"start" (Run.ready). With one connection the worker is a thread: no second
copy of the interpreter, and one core is all one connection needs.

Why flight logs: "never twice" needs each recipient's in-flight mark on disk before the
message's bytes go out, one sync per message. In one state file those syncs queue for its one
writer, and a journal process in the middle costs two hand-offs per message. So each connection
appends its marks and outcomes to a small file of its own (flightlog.FlightLog): K connections
sync in parallel and no message waits for another process. The parent copies the logs into the
state file every SYNC_EVERY seconds and, durably, at the end; a crashed send's logs are copied
in when the state file is next opened (Journal.recover): whoever was in flight then reads as
uncertain, exactly as with one state file.

Per message a worker pipelines (RFC 2920) its envelope behind the previous message's data, in
the same write when it was built in time (it is built while the server reads the previous
one: _Sender.prepare_next), so one read brings the previous reply and this envelope's 354;
only then is this recipient marked (with the previous outcome), and only then do its bytes go.
A connection has one recipient in flight, unless its disk is slow: when a sync of the flight
log takes SYNC_SHARE of a message's own work or more, the worker marks the next few recipients
ahead of their turn in batches (at most MARKS_AHEAD; one write and one fdatasync a batch) and
a sync thread puts the marks on disk while earlier messages go (_Sender.mark_ahead); each
message still waits, if it must, for its own mark to be on disk.

The parent hands out jobs and counts results over a socket pair per worker:

    parent -> worker   ("start", flight log path, time of the plan)   once
                       ("jobs", [(recipient values, contact id, message id, lang, attempts,
                                  tries), …])
                       ("stop",)                no more work
    worker -> parent   ("done", [(kind, detail), …])  results of its jobs, in order
                       ("fatal", (kind, detail) | None, why)   it cannot go on

Each worker has up to AHEAD jobs queued, so it never waits for the parent. A shared stop flag
(Ctrl-C, a fatal error) makes workers finish the message on the wire and leave their queued
jobs untouched. A worker process whose parent dies (kill -9) is killed with it (Linux:
PR_SET_PDEATHSIG) and otherwise stops at its next read of the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import heapq
import itertools
import math
import mmap
import multiprocessing
import os
import pickle
import select
import selectors
import signal
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from newsletter import deliver, links, message
from newsletter.bounces.match import envelope_sender
from newsletter.config import Config, Relay
from newsletter.edition import Edition
from newsletter.errors import NewsletterError
from newsletter.flightlog import FlightLog, flight_path, read_flight
from newsletter.journal import BUSY_TIMEOUT, Journal
from newsletter.recipients import Recipient
from newsletter.runlist import Planned

Prepared = dict[str, tuple[message.PreparedEdition, Edition]]  # language -> ready edition
Result = tuple[str, str]  # (kind, detail); kinds in _Parent.finish

BACKOFF_FIRST = 1.0  # seconds before the first retry of a recipient; doubles each time
BACKOFF_MAX = 30.0
POLL = 0.1  # longest anyone waits before looking at the stop flag again
SYNC_EVERY = 1.0  # seconds between copies of the flight logs into the state file
AHEAD = 16  # jobs queued per worker (1 under a rate cap: the cap decides when each goes)
REPORT_EVERY = 8  # results a worker gathers before it reports them (sooner when it runs dry)
SHARE_SLACK = 2  # messages per connection a relay may be handed beyond its share (weight)
MARKS_AHEAD = 8  # at most this many queued recipients marked in flight ahead of their turn
SYNC_SHARE = 0.2  # marks go ahead only when a sync takes this share of a message's work or more
QUICK_WORK = 0.005  # and only while a message's own work is under this (s): a fast server
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


# --- the parent: jobs, rate, progress, the state file -----------------------------------


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

    Jobs are made as they are taken, not all up front, from an iterator (the plan's rows,
    read from SQLite in batches): a million of them would cost hundreds of MiB.
    """

    def __init__(self, todo: Iterable[Planned]) -> None:
        self.todo = iter(todo)
        self.following: Planned | None = next(self.todo, None)  # the next one in list order
        self.next = 0  # taken so far
        self.heap: list[_Job] = []  # retries, by due time
        self.busy = 0
        self.seq = itertools.count(1 << 40)  # retries after every first try

    def take(self, now: float) -> _Job | None:
        if self.heap and self.heap[0].due <= now:
            self.busy += 1
            return heapq.heappop(self.heap)
        if self.following is not None:
            self.busy += 1
            self.next += 1
            job = _Job(0.0, self.next - 1, self.following)
            self.following = next(self.todo, None)
            return job
        return None

    def done(self, job: _Job, retry_at: float | None = None) -> None:
        self.busy -= 1
        if retry_at is not None:
            job.due = retry_at
            job.seq = next(self.seq)
            heapq.heappush(self.heap, job)

    def finished(self) -> bool:
        return self.busy == 0 and not self.heap and self.following is None

    def next_due(self) -> float | None:
        """When the earliest retry is due, if only retries are left to hand out."""
        if self.following is not None or not self.heap:
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
    process: multiprocessing.process.BaseProcess | threading.Thread
    flight: Path | None
    queued: deque[_Job] = field(default_factory=deque)  # handed out, no result yet
    outbox: list[tuple] = field(default_factory=list)  # handed out this turn, not sent yet
    told_stop: bool = False
    alive: bool = True
    relay: Relay | None = None  # its relay in a [[smtp.relay]] pool
    group: _Group | None = None  # the parent's view of that relay
    draining: bool = False  # its relay is drained: what it was handed goes to the others


@dataclass
class _Group:
    """The workers of one relay: its share of the messages (weight), its own rate cap, how many
    it was handed, and why it was drained (it refused or dropped connections), if it was."""

    name: str
    weight: float
    bucket: _Bucket
    workers: list[_Worker] = field(default_factory=list)
    handed: int = 0
    drained: str = ""


@dataclass
class Tally:
    """What the workers reported, as the summary counts it."""

    sent: int = 0  # a count: who was sent is in the state file, not held here
    failed: list[tuple[str, str]] = field(default_factory=list)
    uncertain: list[tuple[str, str]] = field(default_factory=list)
    suppressed: int = 0
    done: int = 0  # recipients finished one way or another (the progress bar)


class _Parent:
    """The send's main process: hands out jobs, counts results, keeps the state file current."""

    def __init__(
        self, run: Run, journal: Journal | None, todo: Iterable[Planned], cap: float, stop: Any
    ) -> None:
        self.run = run
        self.journal = journal
        self.work = _Work(todo)
        self.bucket = _Bucket(cap)  # the run's cap (--rate, [smtp] rate), over every relay
        self.groups: list[_Group] = []
        self.tally = Tally()
        self.workers: list[_Worker] = []
        self.selector = selectors.DefaultSelector()
        self.stop_flag = stop  # shared with the workers (a byte in shared memory)
        self.stopping = False
        self.fatal: NewsletterError | None = None
        self.synced: dict[Path, int] = {}  # flight log -> bytes copied so far
        self.last_sync = time.monotonic()

    # messages from workers

    def receive(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except EOFError:
            self.gone(w)
            return
        if msg[0] == "done":
            for result in msg[1]:
                self.finish(w.queued.popleft(), result)
        elif msg[0] == "fatal":  # ("fatal", result, why, the relay's fault)
            _, result, why, relay = msg
            if relay and w.group is not None and not self.stopping:
                if result is not None:
                    job = w.queued.popleft()
                    if result[0] in ("skipped", "stopped"):  # never begun: to another relay
                        w.queued.appendleft(job)
                    else:
                        self.finish(job, result)
                self.drain(w.group, why)
                return
            if result is not None:
                self.finish(w.queued.popleft(), result)
            self.halt(NewsletterError(why))

    def drain(self, g: _Group, why: str) -> None:
        """A relay refuses or drops connections: its workers stop, and the messages they were
        handed and never began go to the other relays (when the worker has exited, so that its
        flight log has written back any it marked ahead). With no relay left, the run stops.

        Never twice across the pool: a message whose data went out to this relay and whose
        reply never came is uncertain and stays so; only one never begun moves."""
        if g.drained:
            return
        g.drained = why
        for w in g.workers:
            w.draining = True
            self.tell_stop(w)
        if all(other.drained for other in self.groups):
            self.halt(NewsletterError(why))
            return
        reason = why.split(" Is the SMTP server down?")[0].split(" Nothing more was sent")[0]
        click.echo(
            f"\nRelay {g.name} drained: {reason.rstrip('.')}. Its messages go to the other "
            "relays.",
            err=True,
        )

    def gone(self, w: _Worker) -> None:
        """A worker's socket closed: it exited (told to, or after a fatal error) or died."""
        w.alive = False
        self.selector.unregister(w.conn)
        if w.draining and not self.stopping:  # its relay is drained: never begun, move them
            now = self.run.clock.monotonic()
            while w.queued:
                job = w.queued.popleft()
                job.tries -= 1  # this try never began
                self.work.done(job, retry_at=now)
            return
        if w.queued and not self.stopping:  # it died on its own: the first may be on the wire
            self.finish(w.queued.popleft(), ("uncertain", DIED))
            self.halt(NewsletterError(f"a sender process died ({DIED})."))
        while w.queued:  # queued, never begun (a worker begins nothing once stopping)
            self.work.done(w.queued.popleft())

    def finish(self, job: _Job, result: Result) -> None:
        """Count the outcome of a job; a retry goes back on the list after its backoff."""
        kind, detail = result
        address = job.planned.recipient.email
        t = self.tally
        retry_at = None
        if kind == "retry":
            retry_at = self.run.clock.monotonic() + backoff(job.tries)
        elif kind in ("sent", "built"):  # built: a dry run's message, handed to nobody
            t.sent += 1
        elif kind == "failed":
            t.failed.append((address, detail))
        elif kind == "uncertain":  # stays in flight: the server may have it
            t.uncertain.append((address, detail))
        elif kind == "suppressed":
            t.suppressed += 1
        # "stopped": not sent, back to pending for the next run; "skipped": never begun
        t.done += kind in ("sent", "built", "failed", "uncertain", "suppressed")
        self.work.done(job, retry_at)

    def halt(self, err: NewsletterError) -> None:
        if self.fatal is None:
            self.fatal = err
        self.stop()

    def stop(self) -> None:
        """Workers finish the message on the wire, begin nothing more, and exit."""
        self.stopping = True
        self.stop_flag.value = 1
        for w in self.workers:
            self.tell_stop(w)

    def tell_stop(self, w: _Worker) -> None:
        if w.alive and not w.told_stop:
            w.told_stop = True
            with contextlib.suppress(OSError):  # it died: its EOF is handled by receive()
                w.conn.send(("stop",))

    # handing out jobs

    def dispatch(self) -> float | None:
        """Top up the workers' queues, one job each in turn (a short list still spreads over all
        connections); returns seconds until a job may go, if one is held back."""
        try:
            return self.fill()
        finally:
            for w in self.workers:
                self.post(w)

    def fill(self) -> float | None:
        """Hand jobs to the relay furthest below its share (handed / weight) that has a worker
        with room and whose rate cap lets a message go, to that relay's least busy worker.

        Shares hold over the run: a relay is never more than SHARE_SLACK messages per
        connection ahead of weight / the weights' sum of all handed out, so a faster relay does
        not take a slower one's share (the slowest for its weight sets the pace: weights are
        the spread asked for); a drained relay's share goes to the others."""
        wait: float | None = None
        clock = self.run.clock
        live = [g for g in self.groups if not g.drained]
        if len(live) == 1 and not self.bucket.interval and not live[0].bucket.interval:
            return self.fill_one(live[0])
        while True:
            now = clock.monotonic()
            if (left := self.bucket.wait(now)) > 0:
                return left
            live = [g for g in self.groups if not g.drained]
            weights = sum(g.weight for g in live)
            handed = sum(g.handed for g in live) + 1
            best: tuple[float, _Group, _Worker] | None = None
            for g in live:
                ahead = 1 if (self.bucket.interval or g.bucket.interval) else AHEAD
                if g.handed + 1 > g.weight / weights * handed + SHARE_SLACK * len(g.workers):
                    continue  # ahead of its share
                room = [
                    w
                    for w in g.workers
                    if w.alive and not w.told_stop and len(w.queued) < ahead
                ]
                if not room:
                    continue
                if (left := g.bucket.wait(now)) > 0:
                    wait = left if wait is None else min(wait, left)
                    continue
                score = (g.handed + 1) / g.weight
                if best is None or score < best[0]:
                    best = (score, g, min(room, key=lambda w: len(w.queued)))
            if best is None:
                return wait
            job = self.work.take(now)
            if job is None:
                return self.none_left(now, wait)
            _, g, w = best
            self.bucket.take(now)
            g.bucket.take(now)
            g.handed += 1
            self.hand(w, job)

    def fill_one(self, g: _Group) -> float | None:
        """fill for the usual run: one relay (or [smtp]) and no rate cap, so no share or cap
        to weigh per job: each worker with room gets one job in turn, the least busy first
        (a short list still spreads over all connections), until none has room."""
        now = self.run.clock.monotonic()
        while True:
            room = [w for w in g.workers if w.alive and not w.told_stop and len(w.queued) < AHEAD]
            if not room:
                return None
            room.sort(key=lambda w: len(w.queued))
            for w in room:
                job = self.work.take(now)
                if job is None:
                    return self.none_left(now, None)
                g.handed += 1
                self.hand(w, job)

    def none_left(self, now: float, wait: float | None) -> float | None:
        """No job to hand out now: when all are done, idle workers are told to stop; when only
        retries are left, the time until the first is due (or `wait`, if sooner)."""
        if self.work.finished():
            for idle in self.workers:
                if not idle.queued:
                    self.tell_stop(idle)
        elif (due := self.work.next_due()) is not None:
            wait = max(0.0, due - now) if wait is None else min(wait, max(0.0, due - now))
        return wait

    def hand(self, w: _Worker, job: _Job) -> None:
        p = job.planned
        r = p.recipient
        lang = self.run.lang(p)
        msg_id = self.run.prepared[lang][0].new_message_id()
        job.tries += 1
        spec = (
            (r.email, r.key, r.name, r.language, r.fields, r.line),
            p.public_id,
            msg_id,
            lang,
            p.attempts + job.tries,
            job.tries,
        )
        w.queued.append(job)
        w.outbox.append(spec)

    def post(self, w: _Worker) -> None:
        """Send the jobs handed to w in this turn, in one message when they fit."""
        specs, w.outbox = w.outbox, []
        if not specs:
            return
        jobs = list(w.queued)[-len(specs) :]
        try:
            w.conn.send(("jobs", specs))
            return
        except ValueError:  # too big together: one at a time
            pass
        except OSError:  # the worker died: its EOF comes next; the jobs go back
            self.take_back(w, jobs)
            return
        for spec, job in zip(specs, jobs, strict=True):
            try:
                w.conn.send(("jobs", [spec]))
            except ValueError as err:  # a row too big to hand over: it cannot be sent either
                r = job.planned.recipient
                self.tally.failed.append((r.email, f"not sent: {err}"))
                self.tally.done += 1
                w.queued.remove(job)
                self.work.done(job)
            except OSError:
                self.take_back(w, [job])

    def take_back(self, w: _Worker, jobs: list[_Job]) -> None:
        for job in jobs:
            w.queued.remove(job)
            self.work.done(job, retry_at=self.run.clock.monotonic())

    # the state file

    def sync(self, *, final: bool = False) -> None:
        """Copy what the flight logs gained into the state file (not fsync'd: the logs are)."""
        self.last_sync = time.monotonic()
        if self.journal is None:
            return
        rows = []
        for w in self.workers:
            if w.flight is not None:
                got, self.synced[w.flight] = read_flight(w.flight, self.synced.get(w.flight, 0))
                rows += got
        if final:  # all workers are gone: the rest, then all of it on disk, then no logs
            self.journal.apply_flight(rows, durable=True)
            self.journal.remove_flight_logs()
        elif rows:
            self.journal.apply_flight(rows)

    # the loop

    def loop(self, bar: Any, interrupted: Callable[[], bool]) -> None:
        shown = 0
        while True:
            if interrupted() and not self.stopping:
                click.echo("\nInterrupted: finishing the messages on the wire…", err=True)
                self.stop()
            live = [w for w in self.workers if w.alive]
            if not live:
                break
            wait = self.dispatch()
            ready = self.selector.select(0.0 if wait else POLL)
            for key, _ in ready:
                self.receive(key.data)
            if wait and not ready:
                # Only the rate cap or a retry's backoff holds the next job back.
                self.run.clock.sleep(min(wait, POLL))
            if time.monotonic() - self.last_sync >= SYNC_EVERY:
                self.sync()
                if self.tally.done > shown:
                    bar.update(self.tally.done - shown)
                    shown = self.tally.done
        self.sync(final=True)
        if self.tally.done > shown:
            bar.update(self.tally.done - shown)


# --- the worker process --------------------------------------------------------------------


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
            conn.send(("fatal", None, why))
        with contextlib.suppress(EOFError, OSError):
            while conn.recv()[0] != "stop":  # until the parent has read it (see _Sender.drain)
                pass
        return
    sender.main()


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


class Pool:
    """K worker processes for one send, forked before the recipient list is read.

    Forked early, the workers share only what the parent had then (the libraries, the
    editions if the Run has them; else Run.ready fills them at "start") and never the list: when the parent later walks 100,000 recipients, no page
    of theirs is copied for the workers. They wait for `deliver` (or `close`).
    """

    def __init__(
        self,
        run: Run,
        k: int,
        make: Callable[..., deliver.Transport],
        relays: list[Relay] | None = None,
    ) -> None:
        """K workers, each with a transport from make(); with `relays` (a [[smtp.relay]] pool),
        each relay's `connections` workers, with transports from make(relay)."""
        self.run = run
        self.ctx = multiprocessing.get_context("fork")
        self.stop = self.ctx.Value("b", 0, lock=False)
        self.workers: list[_Worker] = []
        self.relays = relays or []
        makers: list[tuple[Relay | None, Callable[[], deliver.Transport]]] = [
            (r, functools.partial(make, r)) for r in self.relays for _ in range(r.connections)
        ] or [(None, make)] * max(1, k)
        k = len(makers)
        if (run.cfg.smtp.host or self.relays) and not run.dry_run:
            deliver.preload()
        sys.stdout.flush()
        sys.stderr.flush()
        self.frozen = k > 1
        if self.frozen:
            gc.collect()
            # The workers' collector leaves the parent's objects (and their pages) alone; so
            # does the parent's own until the workers are gone (see close).
            gc.freeze()
        ends: list[_Line] = []
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks (a test's SMTP server);
            # a worker touches none of their state.
            warnings.simplefilter("ignore", DeprecationWarning)
            for i, (relay, make_one) in enumerate(makers):
                mine, theirs = _Line.pair()
                if k <= 1:  # one connection: a thread, no second copy of the interpreter
                    proc: multiprocessing.process.BaseProcess | threading.Thread
                    proc = threading.Thread(
                        target=_worker_main,
                        args=(run, make_one, theirs, None, 0, self.stop),
                        name="newsletter-send-0",
                        daemon=True,
                    )
                    proc.start()
                else:
                    proc = self.ctx.Process(
                        target=_worker_main,
                        args=(run, make_one, theirs, [*ends, mine], os.getpid(), self.stop),
                        name=f"newsletter-send-{i}",
                        daemon=True,
                    )
                    proc.start()
                    theirs.close()
                ends.append(mine)
                self.workers.append(_Worker(mine, proc, None, relay=relay))

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deliver(
        self,
        journal: Journal | None,
        todo: Iterable[Planned],
        cap: float,
        planned_at: str,
        total: int | None = None,
    ) -> tuple[Tally, bool, NewsletterError | None, float]:
        """Send the to-do list over the workers (one per recipient at most).

        Returns (tally, interrupted, fatal error or None, seconds spent). `journal` is None for
        a dry run (nothing is written); otherwise the caller holds its send lock, and the
        recovery of any earlier flight logs is done (Journal() did it).
        """
        if total is None:
            todo = list(todo)
            total = len(todo)
        parent = _Parent(self.run, journal, todo, cap, self.stop)
        used = self.workers[: max(1, min(len(self.workers), total))] if total else []
        groups: dict[str, _Group] = {}
        for w in used:
            r = w.relay
            g = groups.get(r.name if r else "")
            if g is None:
                g = groups[r.name if r else ""] = _Group(
                    r.name if r else "", r.weight if r else 1.0, _Bucket(r.rate if r else 0.0)
                )
                parent.groups.append(g)
            g.workers.append(w)
            w.group = g
        for i, w in enumerate(self.workers):
            if w not in used:
                parent.tell_stop(w)
                continue
            w.flight = flight_path(journal.path, i) if journal is not None else None
            w.conn.send(("start", w.flight, planned_at))
            parent.workers.append(w)
            parent.selector.register(w.conn, selectors.EVENT_READ, w)
        if not used:
            return parent.tally, False, None, 0.0
        start = time.monotonic()
        with (
            _ctrl_c() as interrupted,
            click.progressbar(
                length=total,
                label="Building" if self.run.dry_run else "Sending",
                file=sys.stderr,
                show_pos=True,
                show_eta=True,
                item_show_func=lambda _: _rate(parent.tally.done, start),
            ) as bar,
        ):
            parent.loop(bar, interrupted)
            was_interrupted = interrupted()
        return parent.tally, was_interrupted, parent.fatal, time.monotonic() - start

    def close(self) -> None:
        """Tell the workers that are still waiting to go, and wait for all of them."""
        for w in self.workers:
            if not w.told_stop:
                w.told_stop = True
                with contextlib.suppress(OSError):
                    w.conn.send(("stop",))
        for w in self.workers:
            w.process.join(timeout=self.run.cfg.smtp.timeout + 5)
            if isinstance(w.process, multiprocessing.process.BaseProcess) and w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        if self.frozen:  # no worker shares a page any more: collect as usual again
            self.frozen = False
            gc.unfreeze()


def _rate(done: int, start: float) -> str:
    elapsed = time.monotonic() - start
    return f"{done / elapsed:.0f}/s" if elapsed > 0 and done else ""
