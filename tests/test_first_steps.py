"""Smaller things a new user tripped on (issue 9): greeting by first name, a row in a language
without an edition, file modes, the README's own commands."""

from __future__ import annotations

import os
import re
import stat

import pytest
from click.testing import CliRunner

from newsletter import recipients
from newsletter.cli import cli
from newsletter.config import load_config
from tests.conftest import ALERT_ID, REPO
from tests.test_send import received_by, setup_project

ALERT = f"alerts/{ALERT_ID}"


def send(*args: str):
    return CliRunner().invoke(cli, ["send", ALERT, "--to", "members.csv", "--yes", *args])


def greeting_of(server, address: str) -> str:
    [rec] = [r for r in server.received if address in r.rcpt_tos]
    text = rec.message.get_body(("plain",)).get_content()
    return next(x for x in text.splitlines() if x.startswith(("Hola", "Dear")))


def test_greets_by_first_name_when_the_list_has_one(project, smtp_server, monkeypatch):
    setup_project(
        project,
        monkeypatch,
        smtp_server,
        csv="email,first_name,last_name,language\n"
        "ana@example.org,Ana Lucía,Pérez,es\n"
        "bob@example.com,,Smith,en\n"  # no first name: the full name
        "cy@example.org,,,en\n",  # no name at all: "Dear friend,"
    )
    assert send().exit_code == 0
    assert greeting_of(smtp_server, "ana@example.org") == "Hola, Ana Lucía:"
    assert greeting_of(smtp_server, "bob@example.com") == "Dear Smith,"
    assert greeting_of(smtp_server, "cy@example.org") == "Dear friend,"


def test_the_greeting_pattern_is_a_setting(project, smtp_server, monkeypatch):
    setup_project(
        project,
        monkeypatch,
        smtp_server,
        csv="email,first_name,last_name,language\nana@example.org,Ana,Pérez,es\n",
    )
    monkeypatch.setenv("NEWSLETTER_GREETING_NAME", "{first_name} {last_name}")
    assert send().exit_code == 0
    assert greeting_of(smtp_server, "ana@example.org") == "Hola, Ana Pérez:"
    monkeypatch.setenv("NEWSLETTER_GREETING_NAME", "{first_name!r}")
    bad = send()
    assert bad.exit_code == 1 and "[greeting] name" in bad.output


def test_a_row_in_a_language_without_an_edition_gets_the_default(project, smtp_server, monkeypatch):
    """Language `fr` dropped the row: that member got nothing. Now the default edition, warned."""
    setup_project(
        project,
        monkeypatch,
        smtp_server,
        csv="email,name,language\nzoe@example.org,Zoë,fr\nbob@example.com,Bob,en\n",
    )
    result = send()
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == {"zoe@example.org": 1, "bob@example.com": 1}
    [zoe] = [r for r in smtp_server.received if r.rcpt_tos == ["zoe@example.org"]]
    assert zoe.message["Subject"].startswith("Alerta de acción")  # es: [defaults] language
    assert "language 'fr' has no edition; zoe@example.org gets the default (es)" in result.output


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_build_and_outbox_files_respect_the_umask(demo, umask_022):
    """They were 0600 whatever the umask (mkstemp's mode), so a web server could not serve a
    build; now what a plain open() gives: 0644 under umask 022."""
    assert CliRunner().invoke(cli, ["build", ALERT]).exit_code == 0
    built = list((demo / "build" / ALERT_ID).iterdir())
    assert built and {stat.S_IMODE(p.stat().st_mode) for p in built} == {0o644}
    result = CliRunner().invoke(cli, ["send", ALERT, "--to", "recipients/sample.csv", "--yes"])
    assert result.exit_code == 0, result.output
    emls = list((demo / "outbox" / ALERT_ID).glob("*.eml"))
    assert emls and {stat.S_IMODE(p.stat().st_mode) for p in emls} == {0o644}
    os.umask(0o077)
    assert CliRunner().invoke(cli, ["build", ALERT, "--out", "private"]).exit_code == 0
    assert {stat.S_IMODE(p.stat().st_mode) for p in (demo / "private").iterdir()} == {0o600}


# --- the README's own words -----------------------------------------------------------------------

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_example_secret_is_long_enough():
    """Its `try-it-locally` (14 characters) was refused by the very command it was for."""
    secrets = re.findall(r"NEWSLETTER_SECRET=(\S+)", README)
    literal = [s for s in secrets if not s.startswith(('"$(', "$("))]
    assert literal and all(len(s) >= 16 for s in literal), literal


def test_readme_says_how_to_make_the_members_list_and_it_works(demo):
    """The week flow used recipients/members.csv, which does not exist: the README says how to
    make it, and the command it gives makes a list `recipients check` accepts."""
    assert "recipients/members.csv" in README
    m = re.search(r"^\s+(cp recipients/sample\.csv recipients/members\.csv)\s", README, re.M)
    assert m, "the README must give the command that makes recipients/members.csv"
    (demo / "recipients" / "members.csv").write_bytes(
        (demo / "recipients" / "sample.csv").read_bytes()
    )
    report = recipients.read_csv(
        demo / "recipients" / "members.csv", load_config().defaults.language
    )
    assert report.recipients and not report.problems


def test_readme_says_how_to_rebuild_the_demo_after_an_edit():
    assert re.search(r"after (an|you) edit", README, re.I)
    assert (
        "make demo" in README and "newsletter build alerts/2011-08-12-secure-communities" in README
    )
