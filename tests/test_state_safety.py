"""The state file under clumsy hands: nothing that could lose the unsubscribes passes silently.

Issue 8: an empty or foreign state file, a read-only folder, a deleted file with backups beside
it, a directory where a flight log goes; backups before a send; the suppression list exported.
"""

from __future__ import annotations

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.journal import Journal
from tests.conftest import ALERT_ID
from tests.test_send import ALERT, FakeClock, received_by, run, send, setup_project


def cli_run(*args: str):
    return CliRunner().invoke(cli, list(args))


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert lines[-1].startswith("Error: ")
    return lines[-1]


# --- 9: a directory named like a flight log -------------------------------------------------


def test_a_directory_named_like_a_flight_log_stops_no_command(project, monkeypatch):
    setup_project(project, monkeypatch)  # outbox: no [smtp] host
    assert send("--yes").exit_code == 0
    stray = project / "newsletter.db.flight-2"
    stray.mkdir()
    (stray / "notes.txt").write_text("someone's files\n")
    status = cli_run("status", ALERT)
    assert status.exit_code == 0, status.output
    assert "4 sent" in status.output
    assert cli_run("suppress", "bob@example.com").exit_code == 0
    again = send("--yes")
    assert again.exit_code == 0, again.output
    assert "sent 0, skipped 4 (already sent)" in again.output
    assert (stray / "notes.txt").read_text() == "someone's files\n"  # not ours: left alone


def test_a_send_that_needs_the_name_says_so_before_sending(project, monkeypatch, smtp_server):
    setup_project(project, monkeypatch, smtp_server, connections=3)
    (project / "newsletter.db.flight-2").mkdir()
    result = send("--yes")
    line = one_error_line(result)
    assert f"{project / 'newsletter.db.flight-2'}: in the way of this send's flight log" in line
    assert "nothing was sent" in line
    assert not received_by(smtp_server)


# --- 11: suppressed during a running send -----------------------------------------------------


def test_a_member_suppressed_during_the_send_shows_as_suppressed_in_status(
    project, smtp_server, monkeypatch
):
    setup_project(project, monkeypatch, smtp_server)

    def rcpt(address: str) -> None:
        if address == "ana@example.org":  # the first message: jose unsubscribes meanwhile
            with Journal(project / "newsletter.db") as j:
                j.suppress("jose@example.org", "one-click")
            mid_send.append(cli_run("status", ALERT).output)

    mid_send: list[str] = []
    smtp_server.on_rcpt = rcpt
    run(FakeClock(), connections=1)
    assert not smtp_server.to("jose@example.org")
    # While the send ran, and for ever after: suppressed, not pending.
    assert "suppressed" in mid_send[0] and "A send is running now" in mid_send[0]
    after = cli_run("status", ALERT)
    assert after.exit_code == 0
    assert (
        f"{ALERT_ID}: 4 recipients: 3 sent, 0 pending, 0 to retry, 0 failed, 0 uncertain, "
        "1 suppressed (unsubscribed: never sent)." in after.output
    )
    # A later run skips jose too, and status says the same.
    assert send("--yes").exit_code == 0
    assert "0 pending" in cli_run("status", ALERT).output
