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

The worker's side (building, pipelining, marks ahead) is sender.py; what both sides share (the
Run, the backoff, the line between them and its messages) is wire.py.

The parent hands out jobs and counts results over a socket pair per worker. Each worker has up
to AHEAD jobs queued, so it never waits for the parent. A shared stop flag (Ctrl-C, a fatal
error) makes workers finish the message on the wire and leave their queued jobs untouched.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import itertools
import multiprocessing
import os
import selectors
import signal
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

from newsletter import deliver
from newsletter.config import Relay
from newsletter.errors import NewsletterError
from newsletter.flightlog import flight_path, read_flight
from newsletter.journal import Journal
from newsletter.runlist import Planned
from newsletter.sender import _worker_main
from newsletter.wire import POLL, Result, Run, _Line, backoff
from newsletter.wire import Clock as Clock  # pool.Clock, pool.Run: campaign's names

SYNC_EVERY = 1.0  # seconds between copies of the flight logs into the state file
AHEAD = 16  # jobs queued per worker (1 under a rate cap: the cap decides when each goes)
SHARE_SLACK = 2  # messages per connection a relay may be handed beyond its share (weight)
EARLIER = "in flight when an earlier run stopped"
DIED = "the sender process stopped mid-message"


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
