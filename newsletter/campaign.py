"""The send run: plan in the journal, deliver over K connections, retry, resume, progress, summary.

Journal discipline ("never twice"): a recipient is marked in flight (committed) before the bytes
go to the server and sent only after its 250. A connection lost after the message went out leaves
the recipient in flight: *uncertain*, reported and not resent unless --retry-uncertain. The
delivery itself (worker processes, flight logs, retries, rate) is `newsletter.pool`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shlex
import signal
import sqlite3
import sys
import tempfile
import traceback
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from newsletter.config import Config
from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from newsletter import deliver, runlist
    from newsletter.bounces import policy
    from newsletter.edition import Edition
    from newsletter.journal import Journal
    from newsletter.pool import Clock
    from newsletter.recipients import Recipient

# Imported where they are used: `send` starts the check's process first (see _Checking), and
# the modules of the send (SMTP, the state file, the workers) load in this one meanwhile.


def __getattr__(name: str) -> Any:
    """EARLIER, Clock and backoff are pool's, and part of this module's API."""
    if name in ("EARLIER", "Clock", "backoff"):
        from newsletter import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SHOW_MAX = 20  # failed/uncertain recipients listed in the summary (the rest: `status`)


@dataclass(frozen=True)
class TestRecipient:
    """The one reader of a `--test` copy: an address, no name, no merge fields."""

    email: str
    name: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """Counts and names of one run, for the summary and for tests."""

    sent: int = 0  # how many (not who: a million addresses would be ~80 MiB)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (address, reply)
    uncertain: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    skipped: int = 0  # already sent by an earlier run
    suppressed: int = 0
    invalid: int = 0
    duplicates: int = 0
    not_reached: int = 0  # left pending/retry by an interruption or an outage
    from_web: int = 0  # confirmed web subscribers not in the CSV, added to the run
    elapsed: float = 0.0  # seconds spent delivering (after render, CSV and plan)
    stopped: str = ""  # why the run stopped early, if it did
    bounced: list[policy.Decision] = field(default_factory=list)  # suppressed for a 5xx


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
    to_csv: Path | None,
    *,
    dry_run: bool = False,
    limit: int | None = None,
    test_address: str | None = None,
    test_as: str | None = None,
    lang: str | None = None,
    connections: int | None = None,
    rate: float | None = None,
    retry_failed: bool = False,
    retry_uncertain: bool = False,
    csv_only: bool = False,
    yes: bool = False,
    clock: Clock | None = None,
) -> Outcome:
    """`newsletter send`: every valid recipient of the CSV, and every confirmed web subscriber
    not in it (unless `csv_only`), gets one copy, once."""
    if (test_as or lang) and not test_address:
        raise NewsletterError(
            f"{'--as' if test_as else '--lang'} goes with --test ADDRESS (a test copy); a send "
            "to the list gives each member their own language."
        )
    if test_address is None and to_csv is None:
        raise NewsletterError("give the list with --to CSV (only a --test copy goes without one).")
    # Only a real send reaches members: there, a placeholder they would receive stops it.
    has_smtp = bool(cfg.smtp.host or cfg.smtp.relay)  # [smtp] host, or a [[smtp.relay]] pool
    if test_address:
        return _send_test_copies(
            cfg, alert_path, test_address, to_csv, test_as, lang, dry_run=dry_run
        )
    assert to_csv is not None
    real = has_smtp and not dry_run
    with _Checking(cfg, alert_path, real=real) as checking:
        return _send_list(
            cfg,
            alert_path,
            to_csv,
            checking,
            has_smtp=has_smtp,
            dry_run=dry_run,
            limit=limit,
            connections=connections,
            rate=rate,
            retry_failed=retry_failed,
            retry_uncertain=retry_uncertain,
            csv_only=csv_only,
            yes=yes,
            clock=clock,
        )


def _send_test_copies(
    cfg: Config,
    alert_path: Path,
    test_address: str,
    to_csv: Path | None,
    test_as: str | None,
    lang: str | None,
    *,
    dry_run: bool,
) -> Outcome:
    """`send --test`: the check (its errors are warnings here), then one copy per language."""
    from newsletter import content, render

    alert = content.load_alert(cfg, alert_path)
    editions: dict[str, Edition] = {}  # the check's member editions: what is checked is sent
    _check_first(cfg, alert_path, editions, test_copy=True, real=False)
    if list(editions) != list(alert.languages):  # one failed to render (a test copy goes on)
        editions = render.render_editions(cfg, alert, variant="member")
    return _send_test(cfg, alert.id, editions, test_address, to_csv, test_as, lang, dry_run=dry_run)


def _send_list(
    cfg: Config,
    alert_path: Path,
    to_csv: Path,
    checking: _Checking,
    *,
    has_smtp: bool,
    dry_run: bool,
    limit: int | None,
    connections: int | None,
    rate: float | None,
    retry_failed: bool,
    retry_uncertain: bool,
    csv_only: bool,
    yes: bool,
    clock: Clock | None,
) -> Outcome:
    """The send to the list, while `checking` renders and checks the editions elsewhere.

    Until the check has passed this process only starts the workers and reads the CSV into a
    temporary table (of the state file's connection when opening it writes nothing, else of a
    private database): nothing is marked, sent or written, no lock or backup taken, so a failed
    check, an error or Ctrl-C leaves everything as it was.
    """
    from newsletter import deliver, message, pool, recipients, runlist, statefile
    from newsletter.bounces import policy
    from newsletter.journal import Journal, timestamp

    clock = clock or pool.Clock()
    relays = cfg.smtp.relay  # a pool: each relay with its own connections, rate and share
    k = 1 if not cfg.smtp.host else (connections or cfg.smtp.connections)
    # The workers start first, before the editions exist and before the recipient list does:
    # they never share the list's pages, and each takes the editions at its "start".
    run = pool.Run(cfg, "", {}, "", clock, dry_run, ready=checking.ready)
    # A dry run delivers nothing: no connection, so no SMTP password is needed for it.
    # Called in the workers after their "start", by then with the alert's id (an outbox's).
    make: Callable[..., deliver.Transport] = (
        (lambda *_: _NoTransport())
        if dry_run
        else lambda relay=None: deliver.make_transport(cfg, run.alert_id, relay)
    )
    conflict = bool(relays and connections)  # reported after the check's own errors
    with contextlib.ExitStack() as stack:
        if not conflict:
            workers = stack.enter_context(
                pool.Pool(run, k, make, relays if not dry_run else None)
            )
        # The list goes into a temporary table as it is read, while the check runs: never all
        # of it in memory. The state file's connection's, if opening it now writes nothing;
        # else a private database's, copied into the state file's once the check has passed.
        jr = _journal_now(cfg)
        early: sqlite3.Connection | None = None
        if jr is not None:
            stack.enter_context(jr)
            scanned = jr.run_list()
        else:
            early = stack.enter_context(
                contextlib.closing(sqlite3.connect("", isolation_level=None))
            )
            scanned = runlist.RunList(early)
        report = recipients.RecipientReport(path=to_csv)
        list_error: NewsletterError | None = None
        try:
            scanned.add(recipients.scan_csv(to_csv, cfg.defaults.language, report))
            report.duplicates = scanned.dedupe()
        except NewsletterError as err:  # said after the check's errors, as before
            list_error = err
        checked = checking.result()
        _report_check(checked.found, alert_path, test_copy=False, real=checking.real)
        if conflict:
            raise NewsletterError(
                "--connections is for [smtp]; with [[smtp.relay]] entries each relay's "
                "`connections` says how many."
            )
        if list_error is not None:
            raise list_error
        alert_id, editions = checked.alert_id, checked.editions
        if cfg.web.base_url or cfg.bounces.verp:
            cfg.require_secret()  # links and VERP tokens are signed: one clear line, before the plan
        run.alert_id, run.default_lang = alert_id, checked.default_language
        run.prepared = {lang: (message.prepare(cfg, ed), ed) for lang, ed in editions.items()}
        outbox = cfg.path("outbox") / alert_id
        if relays:
            transport_desc = "SMTP relays " + ", ".join(
                f"{r.name} ({r.host}:{r.port})" for r in relays
            )
        elif cfg.smtp.host:
            transport_desc = f"SMTP {cfg.smtp.host}:{cfg.smtp.port}"
        else:
            transport_desc = f"the outbox {outbox}"
        cap = cfg.smtp.rate if rate is None else rate
        extra = [
            *(["--connections", str(connections)] if connections else []),
            *(["--rate", f"{rate:g}"] if rate is not None else []),
            *(["--retry-failed"] if retry_failed else []),
            *(["--csv-only"] if csv_only else []),
        ]
        if jr is None:
            jr = stack.enter_context(Journal(cfg.path("state"), secret=cfg.secret))
        if not dry_run:
            jr.acquire_send_lock()
            statefile.flight_log_room([jr.flight_path(i) for i in range(k)])
            jr.backup("before-send")  # the unsubscribes and deliveries, as they were
        listed = scanned
        if early is not None:
            listed = jr.run_list()
            listed.adopt(scanned)
            early.close()  # the private copy (SQLite removes its file)
        csv_rows = listed.count(web=False)
        lines = recipients.format_report(report, csv_rows, listed.by_language())
        click.echo(lines[0])
        for line in lines[1:]:
            click.echo(line, err=True)
        out = Outcome(invalid=len(report.problems), duplicates=len(report.duplicates))
        del report
        planned_at = timestamp()
        out.from_web = _web_subscribers(listed, to_csv, csv_rows, csv_only)
        plan = jr.plan_run(
            alert_id,
            retry_failed=retry_failed,
            retry_uncertain=retry_uncertain,
            dry_run=dry_run,
            smtp=has_smtp,  # [smtp] host or a [[smtp.relay]] pool
        )
        out.skipped = plan.counts["sent"]
        out.suppressed = plan.counts["suppressed"]
        out.uncertain = [(email, pool.EARLIER) for email, _ in plan.listed("uncertain")]
        earlier_failed = plan.listed("failed")
        planned = min(plan.counts["todo"], limit) if limit else plan.counts["todo"]
        if planned and not dry_run:  # a setting or a password missing: one line, before any mark
            for relay in relays or [None]:
                make(relay)
        if planned and has_smtp and not dry_run and not yes:
            click.echo(
                _confirmation(cfg, editions, plan.todo_by_language(limit), checked.default_language),
                err=True,
            )
            click.confirm(
                f"Send to {planned} recipients via {transport_desc.removeprefix('SMTP ')}?",
                abort=True,
                err=True,
            )
        if not has_smtp and not dry_run:
            click.echo(f"No [smtp] host configured: delivering into {outbox}/ (one .eml each).")
        tally, interrupted, fatal, out.elapsed = workers.deliver(
            None if dry_run else jr, plan.todo(limit), cap, planned_at, total=planned
        )
        if not dry_run:  # a "user unknown" 5xx suppresses the address for the next alerts
            out.bounced = policy.record_send_failures(jr, cfg.bounces, alert_id)
        out.sent = tally.sent
        out.failed = tally.failed + earlier_failed
        out.uncertain += tally.uncertain
        out.suppressed += tally.suppressed
        out.not_reached = planned - tally.done
        if interrupted:
            out.stopped = f"Interrupted: {out.not_reached} recipient(s) not sent yet."
        elif fatal is None and out.not_reached:
            out.stopped = f"{out.not_reached} recipient(s) were not reached."
        if not dry_run:  # with who this send reached: the copy to restore after a loss
            try:
                jr.backup("after-send")
            except NewsletterError as err:  # the send is done: say so, then go on
                click.echo(f"warning: {err.message}", err=True)

    _summary(out, dry_run, transport_desc, planned)
    if limit:  # what is left of this run's --limit (a daily cap stays a daily cap)
        extra += ["--limit", str(max(1, out.not_reached))]
    if retry_uncertain and not any(w != pool.EARLIER for _, w in out.uncertain):
        # Asked to retry uncertain ones and none became uncertain in this run: keep asking.
        # One that did may have arrived: resending it is the user's call, not the hint's.
        extra.append("--retry-uncertain")
    command = resume_command(cfg, alert_path, to_csv, extra)
    if fatal is not None or out.stopped:
        reason = fatal.message if fatal is not None else out.stopped
        if out.not_reached:
            reason += f" To resume: {command}"
        raise NewsletterError(reason)
    if out.failed and not dry_run:
        raise NewsletterError(
            f"{len(out.failed)} recipient(s) failed; see above or `newsletter status "
            f"{alert_path}`. To retry them: {command} --retry-failed"
        )
    return out


def _web_subscribers(listed: runlist.RunList, to_csv: Path, csv_rows: int, csv_only: bool) -> int:
    """Confirmed web subscribers who are not in the CSV join the list (after it; one copy each)
    unless `csv_only`; says how many in the plan line, and returns it. `csv_rows`: the list's
    rows from the CSV (deduped already; the web rows go after them and never remove one)."""
    if not listed.add_web_subscribers():
        return 0
    listed.dedupe()  # a subscriber already in the CSV is sent once, as a CSV row
    extra = listed.count(web=True)
    if not extra:
        return 0
    if csv_only:
        listed.drop_web()
        click.echo(f"--csv-only: {extra:,} who subscribed on the web left out.")
        return 0
    click.echo(f"{csv_rows:,} from {to_csv.name} + {extra:,} who subscribed on the web")
    return extra


Finding = tuple[str, bool, str]  # one problem of `newsletter check`: (id, is error, its line)


def _check_first(
    cfg: Config, alert_path: Path, editions: dict[str, Edition], *, test_copy: bool, real: bool
) -> None:
    """`newsletter check`'s errors stop a send (warnings do not); a test copy still goes.
    The member editions the check rendered are left in `editions`."""
    from newsletter import check

    problems = check.collect(cfg, alert_path, real_send=True, editions=editions)
    _report_check(
        [(p.id, p.is_error, p.line()) for p in problems], alert_path, test_copy=test_copy, real=real
    )


def _report_check(found: list[Finding], alert_path: Path, *, test_copy: bool, real: bool) -> None:
    """Say the check's errors and raise (a test copy goes on), warn of placeholders.

    Placeholders members would receive (example.org values, "EXAMPLE:" marks) stop a `real`
    send (SMTP, to the list); the outbox, a dry run and a test copy go on and warn.
    """
    placeholders = [line for pid, _, line in found if pid == "E-EXAMPLE"]
    errors = [line for pid, error, line in found if error and (real or pid != "E-EXAMPLE")]
    if placeholders and not real:
        for line in placeholders:
            click.echo("warning: " + line, err=True)
        click.echo(
            f"warning: {len(placeholders)} placeholder(s) above would reach members; a real "
            "send (with an [smtp] host) stops until they are replaced.",
            err=True,
        )
    if not errors:
        return
    for line in errors:
        click.echo(line, err=True)
    what = f"{alert_path}: {len(errors)} error(s) from `newsletter check`"
    if test_copy:
        click.echo(f"warning: {what}; sending the test copy anyway.", err=True)
        return
    raise NewsletterError(f"{what}. Fix them, then send again.")


@dataclass
class _Checked:
    """What the check's process hands back: its findings and the member editions it rendered
    (what is checked is sent), and the alert's id and default language."""

    found: list[Finding]
    editions: dict[str, Edition]
    alert_id: str
    default_language: str


class _Checking:
    """`newsletter check` of the alert in a process of its own, forked at once, while this one
    starts the workers and reads the list: the two take one core each.

    The child loads the alert and runs check.collect, and writes its answer (a _Checked, or the
    exception it raised) pickled into an anonymous in-memory file that this process and the
    workers (forked after it, at their "start": `ready`) read. It writes no state, and prints
    none of its findings (this process does). It ignores Ctrl-C, which this process handles
    (close kills it).
    """

    def __init__(self, cfg: Config, alert_path: Path, *, real: bool) -> None:
        self.cfg, self.alert_path, self.real = cfg, alert_path, real
        self.fd = _anonymous_file()
        self.pid = 0
        self.answer: _Checked | None = None
        sys.stdout.flush()  # what is buffered here must not be written by the child too
        sys.stderr.flush()
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads forks (a test's SMTP server);
            # the child touches none of their state.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            self._child()
        self.pid = pid

    def __enter__(self) -> _Checking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _child(self) -> NoReturn:
        code = 1
        try:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                answer: tuple[str, Any] = ("ok", _check_for_send(self.cfg, self.alert_path))
            except BaseException as err:  # noqa: BLE001  (handed to the parent, which raises it)
                if not isinstance(err, NewsletterError):
                    err.add_note("In the check's process:\n" + traceback.format_exc())
                answer = ("raised", err)
            try:
                data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that does not pickle: its words and traceback
                data = pickle.dumps(("raised", RuntimeError(traceback.format_exc())))
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            code = 0
        finally:
            os._exit(code)

    def result(self) -> _Checked:
        """Wait for the check; its answer, or the exception it raised (raised here)."""
        if self.answer is None:
            _, status = os.waitpid(self.pid, 0)
            self.pid = 0
            kind, value = _read_answer(self.fd)
            if kind is None:
                raise NewsletterError(
                    f"internal error: the check's process ended without an answer "
                    f"({os.waitstatus_to_exitcode(status)}). Run `newsletter check "
                    f"{self.alert_path}`."
                )
            if kind != "ok":
                raise value
            self.answer = value
        return self.answer

    def ready(self, run: Any) -> None:
        """pool.Run.ready, in a worker at its "start" (the check has passed by then): the
        editions, prepared in this process."""
        from newsletter import message

        try:
            kind, answer = _read_answer(self.fd)
        except OSError as err:
            raise NewsletterError(f"internal error: the editions cannot be read ({err}).") from None
        assert kind == "ok", kind
        run.alert_id, run.default_lang = answer.alert_id, answer.default_language
        run.prepared = {
            lang: (message.prepare(run.cfg, ed), ed) for lang, ed in answer.editions.items()
        }

    def close(self) -> None:
        """Stop the check if it still runs (an error or Ctrl-C here), and free its answer."""
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _journal_now(cfg: Config) -> Journal | None:
    """The state file, opened before the check has passed, if opening it writes nothing: it
    exists, in WAL mode at this version's schema (no upgrade), and no flight log of a crashed
    send waits to be copied in. None otherwise (a first send, an upgrade, a recovery): then it is
    opened once the check has passed, like every write."""
    from newsletter.journal import SCHEMA_VERSION, Journal

    state = cfg.path("state")
    try:
        if not state.is_file() or not state.stat().st_size:
            return None
        prefix = state.name + ".flight-"
        if any(p.name.startswith(prefix) for p in state.parent.iterdir()):
            return None
        probe = sqlite3.connect(f"file:{urllib.parse.quote(str(state.absolute()))}?mode=ro", uri=True)
        try:
            version = probe.execute("PRAGMA user_version").fetchone()[0]
            mode = probe.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            probe.close()
        if version != SCHEMA_VERSION or mode != "wal":
            return None
        return Journal(state, secret=cfg.secret)
    except (OSError, sqlite3.Error, NewsletterError):
        return None  # said, if it still stands, when the file is opened after the check


def _check_for_send(cfg: Config, alert_path: Path) -> _Checked:
    """The check before a send to the list (in _Checking's process): the alert, its findings
    (placeholders members would receive among them) and its member editions."""
    from newsletter import check, content

    alert = content.load_alert(cfg, alert_path)
    editions: dict[str, Edition] = {}
    problems = check.collect(cfg, alert_path, real_send=True, editions=editions, alert=alert)
    return _Checked(
        [(p.id, p.is_error, p.line()) for p in problems],
        editions,
        alert.id,
        alert.default_language,
    )


def _anonymous_file() -> int:
    """A file descriptor of a file in memory that no path names; where the system has no
    memfd_create (or a sandbox refuses it), a temporary file already unlinked."""
    if hasattr(os, "memfd_create"):
        with contextlib.suppress(OSError):
            return os.memfd_create("newsletter-check", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as f:
        return os.dup(f.fileno())


def _read_answer(fd: int) -> tuple[str | None, Any]:
    """The pickled answer in `fd` from its start, (None, None) if there is none."""
    size = os.fstat(fd).st_size
    chunks, at = [], 0
    while at < size:
        chunk = os.pread(fd, size - at, at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    if not chunks:
        return None, None
    return pickle.loads(b"".join(chunks))


def _confirmation(
    cfg: Config, editions: Mapping[str, Edition], by_language: Mapping[str, int], default: str
) -> str:
    """What the user agrees to: the From, each language's subject and count, and the relay."""
    from newsletter.recipients import plural

    counts: dict[str, int] = {}
    for lang, n in by_language.items():
        lang = lang if lang in editions else default
        counts[lang] = counts.get(lang, 0) + n
    lines = [f"From: {cfg.sender.from_}"]
    if cfg.sender.reply_to:
        lines.append(f"Reply-To: {cfg.sender.reply_to}")
    for lang, ed in editions.items():
        if counts.get(lang):
            lines.append(
                f'  {lang}: {plural(counts[lang], "recipient")}, subject "{ed.subject}"'
            )
    for r in cfg.relays():
        who = f", user {r.username}" if r.username else ""
        share = f"; {r.connections} connection(s), weight {r.weight:g}" if r.name else ""
        cap = f", at most {r.rate:g}/s" if r.rate else ""
        name = f"{r.name}: " if r.name else ""
        lines.append(f"Relay: {name}{r.host}:{r.port} ({r.security}{who}{share}{cap})")
    return "\n".join(lines)


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


def _summary(out: Outcome, dry_run: bool, where: str, planned: int) -> None:
    if dry_run:
        click.echo(
            f"Dry run: {out.sent} of {planned} message(s) built; nothing sent "
            f"(would go via {where})."
        )
    parts = [
        f"sent {0 if dry_run else out.sent}",
        f"skipped {out.skipped} (already sent)",
        f"failed {len(out.failed)}",
        f"uncertain {len(out.uncertain)}",
        f"suppressed {out.suppressed}",
        f"invalid rows {out.invalid}",
        f"duplicates {out.duplicates}",
    ]
    if out.not_reached:
        parts.append(f"not reached {out.not_reached}")
    if out.bounced:
        parts.append(f"suppressed for next time {len(out.bounced)} (refused: address gone)")
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


def _send_test(
    cfg: Config,
    alert_id: str,
    editions: dict[str, Edition],
    address: str,
    to_csv: Path | None,
    member: str | None,
    lang: str | None,
    *,
    dry_run: bool,
) -> Outcome:
    """One "[TEST] " copy per language (or `lang`) to any address; not journaled.

    Sample values (the name of `newsletter build`) unless `member` names a row of `to_csv`:
    then that member's name, merge fields and language (their stored choice first). Links are
    always the sample ones (contact 0): a click on the test copy changes no member's state.
    """
    from newsletter import deliver, message, recipients, render

    try:
        rcpt = recipients.check_address(address)[0]
    except ValueError as err:
        raise NewsletterError(f"--test {address!r}: {err}. Give one plain address.") from None
    if lang is not None and lang not in editions:
        raise NewsletterError(
            f"--lang {lang}: this alert has no {lang} edition (it has {', '.join(editions)})."
        )
    who = TestRecipient(rcpt, render.SAMPLE_NAME, dict(render.SAMPLE_FIELDS))
    langs = [lang] if lang else list(editions)
    if member is not None:
        row, member_lang = _member_row(cfg, to_csv, member)
        who = TestRecipient(rcpt, row.name, dict(row.fields))
        if lang is None:
            langs = [member_lang if member_lang in editions else next(iter(editions))]
    out = Outcome()
    for code in langs:
        ed = editions[code]
        prep = message.prepare(cfg, ed, subject=f"[TEST] {ed.subject}")
        _, data = prep.build(who, render.sample_links(cfg, ed))
        if dry_run:
            click.echo(
                f"Dry run: test copy ({code}) for {rcpt} built ({len(data) / 1024:.1f} KB); "
                "nothing sent."
            )
            continue
        reply = deliver.send_one(cfg, f"{alert_id}/tests", rcpt, data)
        if cfg.smtp.host or cfg.smtp.relay:  # the outbox already said where the file went
            by = cfg.smtp.host or cfg.smtp.relay[0].name
            click.echo(f"Test copy ({code}) for {rcpt} accepted by {by}: {reply}")
        out.sent += 1
    return out


def _member_row(cfg: Config, to_csv: Path | None, member: str) -> tuple[Recipient, str]:
    """The CSV row of `--as MEMBER` and the language a send would give them."""
    from newsletter import recipients
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal
    if to_csv is None:
        raise NewsletterError(f"--as {member}: give the list the member is on with --to CSV.")
    report = recipients.read_csv(to_csv, cfg.defaults.language)
    key = member.strip().lower()
    row = next((r for r in report.recipients if r.key == key), None)
    if row is None:
        raise NewsletterError(
            f"--as {member}: no valid row of {to_csv} has this address. Check the spelling "
            f"(`newsletter recipients check {to_csv}` lists the rows it skips)."
        )
    lang = row.language
    state = cfg.path("state")
    if state.exists():  # their choice on the language page wins over the CSV, as in a send
        with Journal(state, secret=cfg.secret) as jr:
            lang = Contacts(jr).language_prefs().get(row.key, lang)
    return row, lang
