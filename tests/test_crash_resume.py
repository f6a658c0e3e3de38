"""A sender killed with SIGKILL mid-run, then run again: each recipient exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

from newsletter.journal import Journal
from tests.conftest import ALERT_ID
from tests.test_send import ALERT, setup_project

N = 12
STUCK = "m05@example.org"  # the server sits on this one's DATA until the sender is killed


def newsletter(project, *args: str) -> subprocess.CompletedProcess:
    """`python -m newsletter ARGS` in the project, as a user runs it; bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SEND = ["send", ALERT, "--to", "members.csv", "--yes"]


def send_cmd(*extra: str) -> list[str]:
    """The command line of a send, for Popen (a process to kill)."""
    return [sys.executable, "-m", "newsletter", *SEND, *extra]


def test_kill_9_mid_run_then_resume_sends_each_once(project, smtp_server, monkeypatch):
    rows = "".join(f"m{i:02d}@example.org,Member {i},{'es' if i % 2 else 'en'}\n" for i in range(N))
    setup_project(project, monkeypatch, smtp_server, csv="email,name,language\n" + rows)
    addresses = [f"m{i:02d}@example.org" for i in range(N)]
    stuck = threading.Event()

    async def slow(rec):
        await asyncio.sleep(0.02)  # a slow server: the run takes a while
        if rec.rcpt_tos == [STUCK]:
            stuck.set()
            await asyncio.sleep(20)  # cancelled when the sender dies
        return None

    smtp_server.on_data = slow
    proc = subprocess.Popen(
        send_cmd("--connections", "1"),
        cwd=project,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert stuck.wait(30), "the sender never reached the stuck recipient"
        time.sleep(0.05)  # let the message bytes reach the server
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with Journal(project / "newsletter.db") as j:
        before = j.states(ALERT_ID)
    assert before[STUCK] == "in_flight"
    sent_before = {a for a, s in before.items() if s == "sent"}
    assert len(sent_before) == 5  # m00..m04, then m05 hung

    smtp_server.on_data = None
    again = newsletter(project, *SEND)
    assert again.returncode == 0, again.stderr
    assert "uncertain 1" in again.stdout and "skipped 5 (already sent)" in again.stdout
    assert STUCK in again.stderr and "--retry-uncertain" in again.stderr
    got = Counter(a for r in smtp_server.received for a in r.rcpt_tos)
    assert got == Counter(a for a in addresses if a != STUCK)  # everyone else exactly once

    status = newsletter(project, "status", ALERT)
    assert "1 uncertain" in status.stdout and STUCK in status.stdout

    resend = newsletter(project, *SEND, "--retry-uncertain")
    assert resend.returncode == 0, resend.stderr
    got = Counter(a for r in smtp_server.received for a in r.rcpt_tos)
    assert got == Counter(addresses)  # the stuck one never arrived before, now once
    with Journal(project / "newsletter.db") as j:
        assert set(j.states(ALERT_ID).values()) == {"sent"}


def test_ctrl_c_prints_the_command_that_resumes(project, smtp_server, monkeypatch):
    rows = "".join(f"m{i:02d}@example.org,Member {i},es\n" for i in range(N))
    setup_project(project, monkeypatch, smtp_server, csv="email,name,language\n" + rows)

    async def slow(rec):
        await asyncio.sleep(0.1)

    smtp_server.on_data = slow
    proc = subprocess.Popen(
        send_cmd("--connections", "2"),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    smtp_server.wait_for(3, timeout=30)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    assert "Interrupted:" in err and "not sent yet" in err
    resume = err.split("To resume: ", 1)[1].splitlines()[0]
    assert resume == f"newsletter send {ALERT} --to members.csv --connections 2"
    assert "uncertain 0" in out  # the messages on the wire were finished, not abandoned

    smtp_server.on_data = None
    again = newsletter(project, *resume.split()[1:], "--yes")
    assert again.returncode == 0, again.stderr
    got = Counter(a for r in smtp_server.received for a in r.rcpt_tos)
    assert got == Counter(f"m{i:02d}@example.org" for i in range(N))
