"""The send run: plan in the journal, deliver over K connections, retry, resume, progress, summary.

Journal discipline ("never twice"): a recipient is marked in flight (committed) before the bytes
go to the server and sent only after its 250. A connection lost after the message went out leaves
the recipient in flight: *uncertain*, reported and not resent unless --retry-uncertain.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click

from newsletter import deliver, links, message, recipients
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal, Planned, Unsubscribed
from newsletter.render import Edition

Prepared = dict[str, tuple[message.PreparedEdition, Edition]]  # language -> ready edition

BACKOFF_FIRST = 1.0  # seconds before the first retry of a recipient; doubles each time
BACKOFF_MAX = 30.0
POLL = 0.1  # longest a worker sleeps before it looks at the stop flag again
SHOW_MAX = 20  # failed/uncertain recipients listed in the summary (the rest: `status`)
EARLIER = "in flight when an earlier run stopped"


@dataclass
class Clock:
    """Time as the run sees it; tests pass a fake one so backoff and rate cost no real waiting."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class TestRecipient:
    """The one reader of a `--test` copy: an address, no name, no merge fields."""

    email: str
    name: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """Counts and names of one run, for the summary and for tests."""

    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reply)
    uncertain: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    skipped: int = 0  # already sent by an earlier run
    suppressed: int = 0
    invalid: int = 0
    duplicates: int = 0
    not_reached: int = 0  # left pending/retry by an interruption or an outage
    elapsed: float = 0.0  # seconds spent delivering (after render, CSV and plan)
    stopped: str = ""  # why the run stopped early, if it did


class _Bucket:
    """Token bucket shared by all connections: at most `rate` messages a second overall."""

    def __init__(self, rate: float, clock: Clock) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.clock = clock
        self.lock = threading.Lock()
        self.next = 0.0

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self.lock:
            now = self.clock.monotonic()
            at = max(now, self.next)
            self.next = at + self.interval
        while not stop.is_set() and (left := at - self.clock.monotonic()) > 0:
            self.clock.sleep(min(left, POLL))


@dataclass(order=True, slots=True)
class _Job:
    due: float
    seq: int
    planned: Planned = field(compare=False)
    tries: int = field(default=0, compare=False)  # attempts in this run


class _Work:
    """The to-do list in order, retries first once due. Nothing left and nobody busy = done.

    Jobs are made as they are taken, not all up front: 100,000 of them would cost megabytes.
    """

    def __init__(self, todo: list[Planned], clock: Clock) -> None:
        self.todo = todo
        self.next = 0
        self.heap: list[_Job] = []  # retries, by due time
        self.busy = 0
        self.cond = threading.Condition()
        self.clock = clock
        self.seq = itertools.count(len(todo))

    def take(self, stop: threading.Event) -> _Job | None:
        while not stop.is_set():
            with self.cond:
                now = self.clock.monotonic()
                if self.heap and self.heap[0].due <= now:
                    self.busy += 1
                    return heapq.heappop(self.heap)
                if self.next < len(self.todo):
                    self.busy += 1
                    self.next += 1
                    return _Job(0.0, self.next - 1, self.todo[self.next - 1])
                if not self.heap:
                    if self.busy == 0:
                        return None
                    self.cond.wait(POLL)  # another worker may hand a retry back
                    continue
                wait = self.heap[0].due - now
            self.clock.sleep(min(wait, POLL))
        return None

    def done(self, job: _Job, retry_in: float | None = None) -> None:
        with self.cond:
            self.busy -= 1
            if retry_in is not None:
                job.due = self.clock.monotonic() + retry_in
                job.seq = next(self.seq)
                heapq.heappush(self.heap, job)
            self.cond.notify_all()


class _Ticket:
    __slots__ = ("done", "error", "wait")

    def __init__(self, wait: bool) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.wait = wait


class _GroupCommit:
    """The journal as the sender threads use it: several changes per transaction (one fsync).

    begin() returns only once the in-flight mark is on disk: nobody is handed to SMTP before.
    sent/defer/fail are queued and committed with the next begin, or within FLUSH_AFTER. A
    process killed before that leaves those recipients in flight: uncertain, never resent —
    the safe side of "never twice", for at most a few recipients.
    """

    FLUSH_AFTER = 0.05
    WAIT_MAX = 120.0  # far beyond SQLite's own busy timeout: only a stuck disk gets here
    # How long a mark waits for the other connections' marks to share its fsync. An fsync
    # costs 0.6-1.5 ms here; without waiting, 4 connections averaged 1.7 marks per fsync.
    GATHER = 0.0005

    def __init__(self, journal: Journal, workers: int = 1) -> None:
        self.journal = journal
        self.workers = workers
        self.cond = threading.Condition()
        self.queue: list[tuple[Callable[..., object], tuple, _Ticket]] = []
        self.urgent = 0  # marks waiting to be on disk
        self.closed = False
        self.since = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="journal")
        self.thread.start()

    def _submit(self, name: str, args: tuple, wait: bool) -> _Ticket:
        ticket = _Ticket(wait)
        with self.cond:
            if self.closed:
                raise RuntimeError("journal writer closed")
            if not self.queue:
                self.since = time.monotonic()
            self.queue.append((getattr(self.journal, name), args, ticket))
            self.urgent += wait
            self.cond.notify_all()
        return ticket

    def _wait(self, ticket: _Ticket) -> None:
        if not ticket.done.wait(self.WAIT_MAX):
            raise NewsletterError(
                f"the state file did not take a write in {self.WAIT_MAX:.0f} s; stopping."
            )
        if ticket.error is not None:
            raise ticket.error

    def begin(self, alert_id: str, key: str, message_id: str, lang: str) -> None:
        """Mark in flight; returns once it is on disk."""
        self.begin_soon(alert_id, key, message_id, lang)()

    def begin_soon(self, alert_id: str, key: str, message_id: str, lang: str) -> _Mark:
        """Start the in-flight mark; calling the result returns once it is on disk."""
        return _Mark(self, self._submit("begin", (alert_id, key, message_id, lang), wait=True))

    def sent(self, alert_id: str, key: str, reply: str) -> None:
        self._submit("sent", (alert_id, key, reply), wait=False)

    def defer(self, alert_id: str, key: str, reply: str) -> None:
        self._submit("defer", (alert_id, key, reply), wait=False)

    def fail(self, alert_id: str, key: str, reply: str) -> None:
        self._submit("fail", (alert_id, key, reply), wait=False)

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not (self.urgent or self.closed):
                    if self.queue:
                        left = self.since + self.FLUSH_AFTER - time.monotonic()
                        if left <= 0:
                            break
                        self.cond.wait(left)
                    else:
                        self.cond.wait()
                until = time.monotonic() + self.GATHER
                while (
                    0 < self.urgent < self.workers
                    and not self.closed
                    and (left := until - time.monotonic()) > 0
                ):
                    self.cond.wait(left)
                batch, self.queue, self.urgent = self.queue, [], 0
                if not batch and self.closed:
                    return
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[..., object], tuple, _Ticket]]) -> None:
        try:
            with self.journal.batch():
                for fn, args, ticket in batch:
                    try:
                        fn(*args)
                    except Exception as err:  # one refused change must not undo the others
                        ticket.error = err
        except Exception as err:  # the commit itself failed (disk full, locked): all of them
            for _, _, ticket in batch:
                ticket.error = ticket.error or err
        for _, _, ticket in batch:
            if ticket.error is not None and not ticket.wait and self.error is None:
                self.error = ticket.error
            ticket.done.set()

    def close(self) -> None:
        """Commit what is queued and stop; raise the first error nobody waited for."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Mark:
    """An in-flight mark on its way to disk. Calling it waits for it (and raises if refused);
    the transport calls it after the server's 354, so the fsync overlaps the envelope's round
    trip and the message's bytes still go out only once the mark is durable."""

    __slots__ = ("refused", "ticket", "writer")

    def __init__(self, writer: _GroupCommit, ticket: _Ticket) -> None:
        self.writer, self.ticket, self.refused = writer, ticket, False

    def __call__(self) -> None:
        try:
            self.writer._wait(self.ticket)
        except BaseException:
            self.refused = True
            raise


def backoff(tries: int) -> float:
    """Seconds before retry number `tries` (1, 2, 4 … capped)."""
    return min(BACKOFF_FIRST * 2 ** (tries - 1), BACKOFF_MAX)


class _Run:
    """One `send`: the prepared editions, the journal, the workers and what they report."""

    def __init__(
        self,
        cfg: Config,
        alert_id: str,
        prepared: Prepared,
        default_lang: str,
        journal: _GroupCommit,
        clock: Clock,
        dry_run: bool,
    ) -> None:
        self.cfg = cfg
        self.alert_id = alert_id
        self.prepared = prepared
        self.default_lang = default_lang
        self.journal = journal
        self.clock = clock
        self.dry_run = dry_run
        self.stop = threading.Event()
        self.results: queue.Queue[tuple[str, str, str]] = queue.Queue()
        self.fatal: NewsletterError | None = None
        self.retries = max(1, cfg.smtp.retries)

    def lang(self, p: Planned) -> str:
        """The edition a planned recipient gets: theirs, else the alert's default."""
        return p.lang if p.lang in self.prepared else self.default_lang

    def build(self, p: Planned, message_id: str | None = None) -> bytes:
        """The message bytes for one planned recipient, links and all."""
        prep, ed = self.prepared[self.lang(p)]
        member = links.edition_links(self.cfg, ed, p.contact_id)
        return prep.build(p.recipient, member, message_id=message_id)[1]

    def worker(self, transport: deliver.Transport, work: _Work, bucket: _Bucket) -> None:
        try:
            while (job := work.take(self.stop)) is not None:
                retry_in = None
                try:
                    retry_in = self.one(transport, job, bucket)
                except NewsletterError as err:
                    self.halt(err)
                except Exception as err:  # a bug: stop cleanly, never leave the run hanging
                    self.halt(NewsletterError(f"internal error while sending: {err!r}"))
                finally:
                    work.done(job, retry_in)
        finally:
            transport.close()

    def halt(self, err: NewsletterError) -> None:
        if self.fatal is None:
            self.fatal = err
        self.stop.set()

    def one(self, transport: deliver.Transport, job: _Job, bucket: _Bucket) -> float | None:
        """Deliver one job; returns seconds until it should be tried again, or None."""
        p = job.planned
        key, address = p.recipient.key, p.recipient.email
        if self.dry_run:
            try:
                data = self.build(p)
            except (NewsletterError, ValueError) as err:
                self.results.put(("failed", address, f"not built: {err}"))
                return None
            self.results.put(("sent", address, f"{len(data)} bytes"))
            return None
        if not transport.connected and not self.connect(transport):
            return 0.0  # stopped while waiting to reconnect: back in the queue, not begun
        bucket.wait(self.stop)
        if self.stop.is_set():
            return 0.0
        lang = self.lang(p)
        prep = self.prepared[lang][0]
        msg_id = prep.new_message_id()
        job.tries += 1
        mark = self.journal.begin_soon(self.alert_id, key, msg_id, lang)
        try:
            return self.marked(transport, job, mark, prep, msg_id)
        except Unsubscribed:
            # Suppressed since the plan (begin checks it in the mark's own transaction): if
            # the envelope had gone, the transport cut the line before the message's bytes.
            self.results.put(("suppressed", address, "unsubscribed during the run"))
            return None

    def marked(
        self,
        transport: deliver.Transport,
        job: _Job,
        mark: _Mark,
        prep: message.PreparedEdition,
        msg_id: str,
    ) -> float | None:
        """The rest of one(), once the in-flight mark is on its way to disk."""
        p = job.planned
        key, address = p.recipient.key, p.recipient.email
        try:  # built while the mark's fsync runs (it is durable before any byte goes out)
            data = self.build(p, msg_id)
        except (NewsletterError, ValueError) as err:
            mark()
            self.journal.fail(self.alert_id, key, f"not built: {err}")
            self.results.put(("failed", address, f"not built: {err}"))
            return None
        mail_from = prep.mail_from
        try:
            # The transport calls mark() between the envelope's 354 and the message bytes.
            code, text = transport.send(mail_from, address, data, before_data=mark)
        except deliver.Uncertain as err:
            # Stays in flight: the server may have it. Sending again could deliver it twice.
            self.results.put(("uncertain", address, str(err)))
            return None
        except deliver.Retry as err:
            mark()
            return self.again(job, key, address, str(err))
        except NewsletterError:  # refused before anything went out (login, TLS, envelope)
            if mark.refused:  # the mark itself failed: nothing was sent, nothing to undo
                raise
            mark()
            self.journal.defer(self.alert_id, key, "not sent: the run stopped")
            raise
        mark()  # the envelope may have been refused before the data: still wait for it
        reply = f"{code} {text}"
        if 200 <= code < 300:
            self.journal.sent(self.alert_id, key, reply)
            self.results.put(("sent", address, ""))
            return None
        if code >= 500:
            self.journal.fail(self.alert_id, key, reply)
            self.results.put(("failed", address, reply))
            return None
        return self.again(job, key, address, reply)

    def connect(self, transport: deliver.Transport) -> bool:
        """(Re)connect before anyone is marked in flight; an outage stops the run, sends nothing."""
        for attempt in range(1, self.retries + 1):
            try:
                transport.open()
                return True
            except deliver.Retry as err:
                if attempt == self.retries:
                    raise NewsletterError(
                        f"{err} ({attempt} attempts). Is the SMTP server down? Nothing more was "
                        "sent; run the same command again later."
                    ) from None
            until = self.clock.monotonic() + backoff(attempt)
            while not self.stop.is_set() and (left := until - self.clock.monotonic()) > 0:
                self.clock.sleep(min(left, POLL))
            if self.stop.is_set():
                return False
        return False

    def again(self, job: _Job, key: str, address: str, reply: str) -> float | None:
        """A 4xx, a timeout or a drop before the data: retry later, a bounded number of times."""
        if job.tries >= self.retries:
            reply = f"gave up after {job.tries} attempts: {reply}"
            self.journal.fail(self.alert_id, key, reply)
            self.results.put(("failed", address, reply))
            return None
        self.journal.defer(self.alert_id, key, reply)
        self.results.put(("retry", address, reply))
        return backoff(job.tries)


def resume_command(cfg: Config, alert_path: Path, to_csv: Path, extra: list[str]) -> str:
    """The exact command that picks up where this run stopped."""
    words = ["newsletter"]
    default = Path.cwd() / "newsletter.toml"
    if cfg.source != "(built-in defaults)" and Path(cfg.source).resolve() != default.resolve():
        words += ["--config", cfg.source]
    words += ["send", str(alert_path), "--to", str(to_csv), *extra]
    return shlex.join(words)


def run_send(
    cfg: Config,
    alert_path: Path,
    to_csv: Path,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    test_address: str | None = None,
    connections: int | None = None,
    rate: float | None = None,
    retry_failed: bool = False,
    retry_uncertain: bool = False,
    yes: bool = False,
    clock: Clock | None = None,
) -> Outcome:
    """`newsletter send`: every valid recipient of the CSV gets one copy, once."""
    from newsletter import content, render

    clock = clock or Clock()
    alert = content.load_alert(cfg, alert_path)
    _check_first(cfg, alert_path, test_copy=bool(test_address))
    editions = render.render_editions(cfg, alert, variant="member")
    default_lang = alert.default_language
    if test_address:
        return _send_test(cfg, alert.id, editions, test_address)
    if cfg.web.base_url:
        cfg.require_secret()  # every member's links are signed: one clear line, before the plan

    report = recipients.read_csv(to_csv, cfg.defaults.language)
    lines = recipients.format_report(report)
    click.echo(lines[0])
    for line in lines[1:]:
        click.echo(line, err=True)

    out = Outcome(invalid=len(report.problems), duplicates=len(report.duplicates))
    prepared = {lang: (message.prepare(cfg, ed), ed) for lang, ed in editions.items()}
    outbox = cfg.path("outbox") / alert.id
    transport_desc = (
        f"SMTP {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else f"the outbox {outbox}"
    )
    k = 1 if not cfg.smtp.host else (connections or cfg.smtp.connections)
    cap = cfg.smtp.rate if rate is None else rate
    extra = [
        *(["--connections", str(connections)] if connections else []),
        *(["--rate", f"{rate:g}"] if rate is not None else []),
        *(["--retry-failed"] if retry_failed else []),
    ]

    with Journal(cfg.path("state"), secret=cfg.secret) as jr:
        if not dry_run:
            jr.acquire_send_lock()
        plan = jr.plan(
            alert.id,
            report.recipients,
            retry_failed=retry_failed,
            retry_uncertain=retry_uncertain,
            dry_run=dry_run,
        )
        out.skipped = len(plan.sent)
        out.suppressed = len(plan.suppressed)
        out.uncertain = [(p.recipient.email, EARLIER) for p in plan.uncertain]
        earlier_failed = [(p.recipient.email, p.last_reply) for p in plan.failed]
        todo = plan.todo[:limit] if limit else plan.todo
        if todo and cfg.smtp.host and not dry_run and not yes:
            click.confirm(
                f"Send to {len(todo)} recipients via {cfg.smtp.host}:{cfg.smtp.port}?",
                abort=True,
                err=True,
            )
        if not cfg.smtp.host and not dry_run:
            click.echo(f"No [smtp] host configured: delivering into {outbox}/ (one .eml each).")
        _one_malloc_arena()  # before the journal and sender threads start
        writer = _GroupCommit(jr, workers=max(1, min(k, len(todo))))
        run = _Run(cfg, alert.id, prepared, default_lang, writer, clock, dry_run)
        try:
            _deliver(run, todo, k, cap, out)
        finally:
            writer.close()
        out.failed += earlier_failed

    _summary(out, dry_run, transport_desc, len(todo))
    if limit:  # what is left of this run's --limit (a daily cap stays a daily cap)
        extra += ["--limit", str(max(1, out.not_reached))]
    if retry_uncertain and not any(w != EARLIER for _, w in out.uncertain):
        # Asked to retry uncertain ones and none became uncertain in this run: keep asking.
        # One that did may have arrived: resending it is the user's call, not the hint's.
        extra.append("--retry-uncertain")
    command = resume_command(cfg, alert_path, to_csv, extra)
    if run.fatal is not None or out.stopped:
        reason = run.fatal.message if run.fatal is not None else out.stopped
        if out.not_reached:
            reason += f" To resume: {command}"
        raise NewsletterError(reason)
    if out.failed and not dry_run:
        raise NewsletterError(
            f"{len(out.failed)} recipient(s) failed; see above or `newsletter status "
            f"{alert_path}`. To retry them: {command} --retry-failed"
        )
    return out


def _check_first(cfg: Config, alert_path: Path, *, test_copy: bool) -> None:
    """`newsletter check`'s errors stop a send (warnings do not); a test copy still goes."""
    from newsletter import check

    errors = [p for p in check.collect(cfg, alert_path) if p.is_error]
    if not errors:
        return
    for p in errors:
        click.echo(p.line(), err=True)
    what = f"{alert_path}: {len(errors)} error(s) from `newsletter check`"
    if test_copy:
        click.echo(f"warning: {what}; sending the test copy anyway.", err=True)
        return
    raise NewsletterError(f"{what}. Fix them, then send again.")


def _one_malloc_arena() -> None:
    """Let the sender threads share the C heap (glibc's M_ARENA_MAX = 1).

    glibc gives each thread that allocates its own arena, and each keeps its own high-water
    mark of message buffers: 6 of the 11 MiB a 100,000-recipient send grew by while sending
    (benchmarks/bench_send.py). The threads take turns under the interpreter lock anyway, so
    sharing one costs nothing measurable. Elsewhere (no glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).mallopt(-8, 1)  # -8: M_ARENA_MAX in glibc's malloc.h


class _NoTransport:
    """The transport of a dry run: messages are built, none is handed to anyone."""

    description = "nothing (dry run)"
    connected = True

    def open(self) -> None:
        pass

    def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        before_data: Callable[[], None] | None = None,
    ) -> deliver.Reply:
        raise AssertionError("a dry run sends nothing")

    def close(self) -> None:
        pass


def _deliver(run: _Run, todo: list[Planned], k: int, cap: float, out: Outcome) -> None:
    """Run K workers over the to-do list, with a progress bar fed from their results."""
    if not todo:
        return
    work = _Work(todo, run.clock)
    bucket = _Bucket(cap, run.clock)
    k = max(1, min(k, len(todo)))
    # A dry run delivers nothing: no connection, so no SMTP password is needed for it.
    transports: list[deliver.Transport] = [
        _NoTransport() if run.dry_run else deliver.make_transport(run.cfg, run.alert_id)
        for _ in range(k)
    ]
    threads = [
        threading.Thread(target=run.worker, args=(t, work, bucket), daemon=True, name=f"send-{i}")
        for i, t in enumerate(transports)
    ]
    start = time.monotonic()
    done = 0

    def rate(_: object) -> str:
        elapsed = time.monotonic() - start
        return f"{done / elapsed:.0f}/s" if elapsed > 0 and done else ""

    interrupted = False
    with click.progressbar(
        length=len(todo),
        label="Building" if run.dry_run else "Sending",
        file=sys.stderr,
        show_pos=True,
        show_eta=True,
        item_show_func=rate,
    ) as bar:
        for t in threads:
            t.start()
        # Poll, don't wait per result: a wake-up per message would take the interpreter lock
        # from the senders a thousand times a second.
        while True:
            running = any(t.is_alive() for t in threads)
            shown = done
            while True:
                try:
                    kind, address, detail = run.results.get_nowait()
                except queue.Empty:
                    break
                if kind == "retry":
                    continue
                done += 1
                if kind == "sent":
                    out.sent.append(address)
                elif kind == "failed":
                    out.failed.append((address, detail))
                elif kind == "suppressed":
                    out.suppressed += 1
                else:
                    out.uncertain.append((address, detail))
            if done > shown:
                bar.update(done - shown)
            if not running:
                break
            try:
                time.sleep(POLL)
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    run.stop.set()
                    click.echo("\nInterrupted: finishing the messages on the wire…", err=True)
    for t in threads:
        t.join(timeout=run.cfg.smtp.timeout + 5)
    out.elapsed = time.monotonic() - start
    out.not_reached = len(todo) - done
    if interrupted:
        out.stopped = f"Interrupted: {len(todo) - done} recipient(s) not sent yet."
    elif run.fatal is None and out.not_reached:
        out.stopped = f"{out.not_reached} recipient(s) were not reached."


def _summary(out: Outcome, dry_run: bool, where: str, planned: int) -> None:
    if dry_run:
        click.echo(
            f"Dry run: {len(out.sent)} of {planned} message(s) built; nothing sent "
            f"(would go via {where})."
        )
    parts = [
        f"sent {0 if dry_run else len(out.sent)}",
        f"skipped {out.skipped} (already sent)",
        f"failed {len(out.failed)}",
        f"uncertain {len(out.uncertain)}",
        f"suppressed {out.suppressed}",
        f"invalid rows {out.invalid}",
        f"duplicates {out.duplicates}",
    ]
    if out.not_reached:
        parts.append(f"not reached {out.not_reached}")
    click.echo("Summary: " + ", ".join(parts) + ".")
    for title, items, hint in (
        ("Failed", out.failed, "--retry-failed resends them"),
        ("Uncertain (may have arrived; not resent)", out.uncertain, "--retry-uncertain resends"),
    ):
        if items:
            click.echo(f"{title} — {hint}:", err=True)
            for address, detail in items[:SHOW_MAX]:
                click.echo(f"  {address}: {detail}", err=True)
            if len(items) > SHOW_MAX:
                click.echo(f"  … and {len(items) - SHOW_MAX} more (newsletter status)", err=True)


def _send_test(cfg: Config, alert_id: str, editions: dict[str, Edition], address: str) -> Outcome:
    """One copy of the default-language edition to any address, marked [TEST]; not journaled."""
    from newsletter import render

    lang = cfg.defaults.language if cfg.defaults.language in editions else next(iter(editions))
    ed = editions[lang]
    prep = message.prepare(cfg, ed, subject=f"[TEST] {ed.subject}")
    try:
        who = TestRecipient(recipients.check_address(address)[0])
    except ValueError as err:
        raise NewsletterError(f"--test {address!r}: {err}. Give one plain address.") from None
    # Not a member: sample links (contact 0), as `newsletter build` shows them.
    _, data = prep.build(who, render.sample_links(cfg, ed))
    reply = deliver.send_one(cfg, f"{alert_id}/tests", who.email, data)
    if cfg.smtp.host:  # the outbox already said where the file went
        click.echo(f"Test copy ({lang}) for {who.email} accepted by {cfg.smtp.host}: {reply}")
    return Outcome(sent=[who.email])
