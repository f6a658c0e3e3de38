"""What a new user following the README trips on, each held by a test (the QA pass of the
session): the trial run into the outbox, then the real send."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import Config
from newsletter.errors import NewsletterError
from tests.conftest import ALERT_ID, REPO
from tests.test_send import VALID, received_by, send, setup_project, states


def test_a_trial_into_the_outbox_does_not_count_as_sent_when_the_relay_is_set(
    project, smtp_server, monkeypatch
):
    """README: `send … --to recipients/sample.csv   # outbox: no [smtp] host yet`. The outbox
    reaches nobody, so the real send that follows must still reach everyone, once."""
    setup_project(project, monkeypatch)  # no [smtp] host: the outbox
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert len(list((project / "outbox").rglob("*.eml"))) == len(VALID)

    setup_project(project, monkeypatch, smtp_server)  # the relay is set now
    dry = send("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"Dry run: {len(VALID)} of {len(VALID)}" in dry.output, dry.output
    assert "skipped 0 (already sent)" in dry.output, dry.output
    result = send("--yes")
    assert result.exit_code == 0, result.output
    assert received_by(smtp_server) == Counter(VALID)
    assert f"sent {len(VALID)}" in result.output

    again = send("--yes")  # and only once: a real delivery is a delivery
    assert again.exit_code == 0, again.output
    assert received_by(smtp_server) == Counter(VALID)
    assert f"skipped {len(VALID)} (already sent)" in again.output
    assert {k: s for k, s in states(project).items() if s == "sent"}.keys() >= set(VALID)


def test_the_readmes_example_secret_is_accepted(monkeypatch):
    """README: `export NEWSLETTER_SECRET=try-it-locally …` then `newsletter serve` stopped on
    the 16-character minimum (14 characters)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"NEWSLETTER_SECRET=([^\s\"'$]+)", readme)
    assert examples, "the README shows an example secret to try things locally"
    for value in examples:
        monkeypatch.setenv("NEWSLETTER_SECRET", value)
        assert Config().require_secret() == value


def test_a_short_secret_says_its_length_not_that_it_is_unset(monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", "try-it-locally")
    with pytest.raises(NewsletterError) as err:
        Config().require_secret()
    assert "has 14 characters; it needs 16 or more" in err.value.message
    assert "try-it-locally" not in err.value.message  # never the secret itself
    monkeypatch.delenv("NEWSLETTER_SECRET")
    with pytest.raises(NewsletterError, match="NEWSLETTER_SECRET is not set"):
        Config().require_secret()


def test_suppressing_one_address_again_says_it_already_was(demo):
    runner = CliRunner()
    assert runner.invoke(cli, ["suppress", "ana@example.org"]).exit_code == 0
    again = runner.invoke(cli, ["suppress", "Ana@Example.org"])
    assert again.exit_code == 0, again.output
    assert "Suppressed 0 addresses (1 already was)." in again.output


def test_forwarding_to_one_friend_says_friend(demo):
    result = CliRunner().invoke(
        cli,
        ["forward", f"alerts/{ALERT_ID}", "--to", "friend@example.org", "--from-name", "Ana"],
    )
    assert result.exit_code == 0, result.output
    assert "to 1 of 1 friend via" in result.output


def test_check_quotes_a_marker_inside_a_link_as_it_was_written(demo):
    """A `[[WRITE: …]]` in alert.toml [links] reaches the HTML as an href, percent-encoded:
    check showed "[[WRITE:%20https://%E2%80%A6%20address…"."""
    runner = CliRunner()
    assert runner.invoke(cli, ["new", "2026-12-04-dream-act"]).exit_code == 0
    result = runner.invoke(cli, ["check", "alerts/2026-12-04-dream-act"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if "WRITE" in ln]
    assert not any("%20" in ln or "%E2" in ln for ln in lines), lines
    assert any('alert.toml:8: unfinished "[[WRITE: https://… address of the' in ln for ln in lines)
