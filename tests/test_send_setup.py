"""What `newsletter send` does before its first message: the check in a process of its own while
this one starts the workers and reads the list, and what that must never change (a failed check
writes nothing, Ctrl-C stops both, the check's errors come first). Real SMTP server, real files.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from newsletter import recipients, render
from tests.conftest import ctrl_c_reaches_children
from tests.test_send import ALERT, VALID, received_by, run, send, setup_project, states

WAIT = 20.0  # seconds a process waits for the other's sign before it gives up (never reached)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path.name} never appeared")
        time.sleep(0.005)


def test_the_list_is_read_while_the_check_renders_in_another_process(
    project, smtp_server, monkeypatch
):
    """The check renders in a child process, and waits there until this process has read the
    whole CSV: done one after the other, the check would wait in vain and the send fail."""
    setup_project(project, monkeypatch, smtp_server)
    read = project / "list-read"
    pids = project / "render-pids"
    real_scan, real_render = recipients.scan_csv, render.render_edition

    def scan(*args, **kwargs):
        yield from real_scan(*args, **kwargs)
        read.touch()

    def rendering(*args, **kwargs):
        wait_for(read)
        with pids.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(recipients, "scan_csv", scan)
    monkeypatch.setattr(render, "render_edition", rendering)
    result = send("--yes", "--connections", "2")
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == {a: 1 for a in VALID}
    assert {int(p) for p in pids.read_text().split()} - {os.getpid()}  # not this process


def test_a_failed_check_writes_nothing_not_even_a_new_state_file(project, smtp_server, monkeypatch):
    """The list is read meanwhile, but into a private temporary database: with the check's
    errors, no state file is made (none was there), no backup, no outbox, nothing sent."""
    setup_project(project, monkeypatch, smtp_server)
    for f in project.glob("newsletter.db*"):
        f.unlink()
    monkeypatch.setenv("NEWSLETTER_SENDER_POSTAL_ADDRESS", "")
    result = send("--yes")
    assert result.exit_code == 1
    assert "E-POSTAL" in result.output and "error(s) from `newsletter check`" in result.output
    assert not list(project.glob("newsletter.db*")) and not (project / "outbox").exists()
    assert not smtp_server.received


def test_the_checks_errors_come_before_the_lists(project, smtp_server, monkeypatch):
    """Both broken: the check's errors are said (first, as when it ran before the list), and
    the list's error does not hide them."""
    setup_project(project, monkeypatch, smtp_server, csv="address;nombre\nana@example.org;Ana\n")
    monkeypatch.setenv("NEWSLETTER_SENDER_POSTAL_ADDRESS", "")
    result = send("--yes")
    assert result.exit_code == 1
    assert "E-POSTAL" in result.output and "error(s) from `newsletter check`" in result.output
    assert "no 'email' column" not in result.output
    monkeypatch.delenv("NEWSLETTER_SENDER_POSTAL_ADDRESS")
    result = send("--yes")
    assert result.exit_code == 1 and "members.csv:1: no 'email' column" in result.output
    assert not smtp_server.received and not states(project)


def test_ctrl_c_during_the_check_stops_its_process_and_writes_nothing(
    project, smtp_server, monkeypatch
):
    """Ctrl-C while this process waits for the check: the check's process is stopped (it
    ignores Ctrl-C itself, and would otherwise go on), nobody is planned or sent to."""
    from newsletter import campaign

    setup_project(project, monkeypatch, smtp_server)
    waiting, child, finished = project / "waiting", project / "child", project / "finished"
    real_result, real_render = campaign._Checking.result, render.render_edition

    def result(self):
        waiting.touch()
        return real_result(self)

    def rendering(*args, **kwargs):
        child.write_text(str(os.getpid()))
        wait_for(waiting)
        os.kill(os.getppid(), signal.SIGINT)  # the user presses Ctrl-C
        time.sleep(WAIT)  # the check goes on: only its parent can stop it
        finished.touch()
        return real_render(*args, **kwargs)

    monkeypatch.setattr(campaign._Checking, "result", result)
    monkeypatch.setattr(render, "render_edition", rendering)
    with ctrl_c_reaches_children():
        outcome = send("--yes")
    assert outcome.exit_code == 1 and "Aborted" in outcome.output, outcome.output
    assert not finished.exists()  # stopped, not waited for
    with pytest.raises(ProcessLookupError):  # and reaped
        os.kill(int(child.read_text()), 0)
    assert not smtp_server.received and not states(project)
    assert not (project / "newsletter.db.backups").exists()


def test_an_unexpected_error_in_the_check_is_raised_here_with_its_traceback(
    project, smtp_server, monkeypatch
):
    from newsletter import check

    setup_project(project, monkeypatch, smtp_server)

    def broken(*args, **kwargs):
        raise ValueError("a bug in a rule")

    monkeypatch.setattr(check, "collect", broken)
    with pytest.raises(ValueError, match="a bug in a rule") as caught:
        run()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "In the check's process" in notes and "in broken" in notes
    assert not smtp_server.received and not states(project)


def test_the_checks_process_reads_the_alert_once(project, smtp_server, monkeypatch):
    from newsletter import check, content

    setup_project(project, monkeypatch, smtp_server)
    reads = project / "reads"  # the check runs in a process of its own: counted in a file
    real = content.load_alert

    def counted(*args, **kwargs):
        with reads.open("a") as f:
            f.write("1\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(content, "load_alert", counted)
    monkeypatch.setattr(check, "load_alert", counted)
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert len(reads.read_text().splitlines()) == 1


def count_adopts(monkeypatch) -> list[int]:
    from newsletter import runlist

    calls: list[int] = []
    real = runlist.RunList.adopt

    def counted(self, other):
        calls.append(other.n)
        return real(self, other)

    monkeypatch.setattr(runlist.RunList, "adopt", counted)
    return calls


def test_an_existing_state_file_takes_the_list_while_the_check_runs(
    project, smtp_server, monkeypatch
):
    """Opening a state file that is up to date writes nothing, so the list goes straight into
    its connection while the check runs (no copy after it); a first send, with no state file
    yet, reads it into a private database and copies it in once the check has passed."""
    setup_project(project, monkeypatch, smtp_server)  # a state file (one suppression)
    adopted = count_adopts(monkeypatch)
    state = project / "newsletter.db"
    before = state.read_bytes()
    monkeypatch.setenv("NEWSLETTER_SENDER_POSTAL_ADDRESS", "")
    assert send("--yes").exit_code == 1  # the check fails: opened early, written nothing
    assert state.read_bytes() == before and not (project / "newsletter.db.backups").exists()
    assert sorted(p.name for p in project.glob("newsletter.db*")) == ["newsletter.db"]
    monkeypatch.delenv("NEWSLETTER_SENDER_POSTAL_ADDRESS")
    assert send("--yes").exit_code == 0
    assert adopted == [] and received_by(smtp_server) == {a: 1 for a in VALID}
    for f in project.glob("newsletter.db*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    assert send("--yes").exit_code == 0
    assert len(adopted) == 1  # (a new state file: its suppression went with the old one)
    assert received_by(smtp_server) == {**{a: 2 for a in VALID}, "gone@example.org": 1}


def test_a_crashed_sends_flight_log_waits_for_the_check(project, smtp_server, monkeypatch):
    """Opening the state file after a crash copies the flight logs in (a write): the list then
    waits in a private database, the state file is opened only once the check has passed, and
    a failed check leaves the log and the state file as they were."""
    from newsletter.flightlog import FlightLog
    from newsletter.journal import Journal

    setup_project(project, monkeypatch, smtp_server)
    state = project / "newsletter.db"
    with Journal(state) as j:
        log = FlightLog(j.flight_path(0))
        log.mark("other-alert", "x@example.org", "<1@x>", "es", 1)
        log.close()
    before = state.read_bytes()
    adopted = count_adopts(monkeypatch)
    monkeypatch.setenv("NEWSLETTER_SENDER_POSTAL_ADDRESS", "")
    assert send("--yes").exit_code == 1
    assert (project / "newsletter.db.flight-0").exists() and state.read_bytes() == before
    monkeypatch.delenv("NEWSLETTER_SENDER_POSTAL_ADDRESS")
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert len(adopted) == 1 and not (project / "newsletter.db.flight-0").exists()
    assert received_by(smtp_server) == {a: 1 for a in VALID}


def test_the_send_process_never_loads_the_renderer(project, smtp_server, monkeypatch):
    """The check renders in its own process: the send's process (and the workers it forks, which
    share its pages) imports neither Jinja, Babel, lxml, premailer nor the Markdown parser.
    In a fresh interpreter: this one has them all."""
    import json
    import subprocess
    import sys

    setup_project(project, monkeypatch, smtp_server)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from newsletter import campaign\n"
        "from newsletter.config import load_config\n"
        f"out = campaign.run_send(load_config(), Path({ALERT!r}), Path('members.csv'), yes=True)\n"
        "heavy = ('jinja2', 'babel', 'lxml', 'premailer', 'markdown_it', 'newsletter.render')\n"
        "print(json.dumps([out.sent, [m for m in heavy if m in sys.modules]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    sent, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert sent == len(VALID) and loaded == []


def test_without_memfd_the_check_answers_through_an_unlinked_temporary_file(
    project, smtp_server, monkeypatch
):
    """A kernel or sandbox without memfd_create (a fault this machine cannot produce, hence the
    stand-in): the check's answer goes through a temporary file that no path names."""
    import errno

    def refused(*args, **kwargs):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", refused)
    setup_project(project, monkeypatch, smtp_server)
    result = send("--yes", "--connections", "2")
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == {a: 1 for a in VALID}
