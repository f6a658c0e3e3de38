"""What a real send must never do: carry a placeholder to members, send during a dry run, or
test only one language. Driven through the CLI against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.contacts import Contacts
from newsletter.journal import Journal
from tests.conftest import ALERT_ID, REPO
from tests.test_send import ALERT, CSV, send, setup_project

SUBJECT_ES = "Alerta de acción"
SUBJECT_EN = "Action alert"


def demo_settings_with_smtp(project: Path, monkeypatch, server) -> None:
    """The repository's demo newsletter.toml (example.org values) with a real relay set."""
    shutil.copy(REPO / "newsletter.toml", project / "newsletter.toml")
    (project / "members.csv").write_text(CSV, encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", server.host)
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", str(server.port))
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")


def test_a_real_send_stops_on_every_placeholder_members_would_receive(
    project, smtp_server, monkeypatch
):
    demo_settings_with_smtp(project, monkeypatch, smtp_server)
    result = send("--yes")
    assert result.exit_code == 1, result.output
    assert not smtp_server.received
    lines = [x for x in result.output.splitlines() if x.startswith("E-EXAMPLE")]
    where = "\n".join(lines)
    # Each one where it is set, with the fix.
    for key in (
        "[sender] from",
        "[sender] postal_address",
        "[sender] unsubscribe_mailto",  # the List-Unsubscribe header and the footer link
        "[org] facebook_url",
        "[links] petition",
        "[links] press-release",
        "[contacts.carlos-roa] email",
    ):
        assert key in where, (key, result.output)
    assert all("Fix: set the real value" in x for x in lines)
    # Nothing that members do not receive: with no base URL, no [web] line.
    assert "[web]" not in where


def test_a_placeholder_written_in_the_text_itself_stops_it_too(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    en = project / "alerts" / ALERT_ID / "en.md"
    en.write_text(en.read_text() + "\nWrite to us at office@example.com.\n")
    result = send("--yes")
    assert result.exit_code == 1 and not smtp_server.received
    assert "E-EXAMPLE" in result.output and "en member copy" in result.output
    assert "office@example.com is a placeholder" in result.output


def test_outbox_dry_run_and_test_copies_still_work_and_warn(project, smtp_server, monkeypatch):
    demo_settings_with_smtp(project, monkeypatch, smtp_server)
    dry = send("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "warning: " in dry.output and "would reach members" in dry.output
    test = send("--test", "editor@example.org", "--lang", "es")
    assert test.exit_code == 0, test.output
    assert "would reach members" in test.output
    assert len(smtp_server.wait_for(1)) == 1
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST")
    outbox = send("--yes")
    assert outbox.exit_code == 0, outbox.output
    assert "would reach members" in outbox.output
    assert (
        len(list((project / "outbox" / ALERT_ID).glob("*.eml"))) == 5
    )  # gone@ is not suppressed here


def test_test_copy_with_dry_run_sends_nothing(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = send("--test", "editor@example.org", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: test copy (es)" in result.output and "nothing sent" in result.output
    assert smtp_server.wait_for(1, timeout=0.5) == []
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST", raising=False)
    (project / "newsletter.toml").write_text(
        (project / "newsletter.toml").read_text().split("[smtp]")[0]
    )
    outbox = send("--test", "editor@example.org", "--dry-run")
    assert outbox.exit_code == 0, outbox.output
    assert not (project / "outbox").exists()


def test_test_sends_one_copy_per_language_without_a_list(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = CliRunner().invoke(cli, ["send", ALERT, "--test", "editor@example.org"])
    assert result.exit_code == 0, result.output
    got = smtp_server.wait_for(2)
    subjects = sorted(r.message["Subject"] for r in got)
    assert len(got) == 2 and all(s.startswith("[TEST] ") for s in subjects)
    assert subjects[0].startswith(f"[TEST] {SUBJECT_EN}")
    assert subjects[1].startswith(f"[TEST] {SUBJECT_ES}")
    # Sample values, as `newsletter build` shows them.
    texts = [r.message.get_body(("plain",)).get_content() for r in got]
    assert sorted("Hola, Ana:" in t or "Dear Ana," in t for t in texts) == [True, True]
    one = CliRunner().invoke(cli, ["send", ALERT, "--test", "editor@example.org", "--lang", "en"])
    assert one.exit_code == 0, one.output
    assert len(smtp_server.wait_for(3)) == 3
    assert smtp_server.received[2].message["Subject"].startswith(f"[TEST] {SUBJECT_EN}")
    no_list = CliRunner().invoke(cli, ["send", ALERT])
    assert no_list.exit_code == 1 and "--to CSV" in no_list.output


def test_test_as_a_member_sends_the_copy_that_member_would_get(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    result = send("--test", "editor@example.org", "--as", "BOB@example.com")
    assert result.exit_code == 0, result.output
    (rec,) = smtp_server.wait_for(1)
    assert rec.rcpt_tos == ["editor@example.org"]
    assert rec.message["Subject"].startswith(f"[TEST] {SUBJECT_EN}")  # Bob's column says en
    assert "Bob Smith" in rec.message.get_body(("plain",)).get_content()
    # Her choice on the language page wins over the CSV, as it does in a send.
    with Journal(project / "newsletter.db") as j:
        Contacts(j).set_language(Contacts(j).add("ana@example.org"), "en")
    ana = send("--test", "editor@example.org", "--as", "ana@example.org")
    assert ana.exit_code == 0, ana.output
    assert smtp_server.wait_for(2)[1].message["Subject"].startswith(f"[TEST] {SUBJECT_EN}")
    nobody = send("--test", "editor@example.org", "--as", "nobody@example.org")
    assert nobody.exit_code == 1 and "no valid row" in nobody.output
    with Journal(project / "newsletter.db") as j:  # a test copy is not a delivery
        assert not j.states(ALERT_ID)


def test_the_question_shows_from_subjects_counts_and_relay(project, smtp_server, monkeypatch):
    setup_project(project, monkeypatch, smtp_server)
    no = send(input="n\n")
    assert no.exit_code == 1 and not smtp_server.received
    out = no.output
    assert "From: NALACC Alertas <alerts@nalacc.test>" in out
    assert f'es: 2 recipients, subject "{SUBJECT_ES}' in out
    assert f'en: 2 recipients, subject "{SUBJECT_EN}' in out
    assert f"Relay: 127.0.0.1:{smtp_server.port} (none)" in out
