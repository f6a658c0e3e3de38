"""What a new user following the README trips on, each held by a test (the QA pass of the
session): the trial run into the outbox, then the real send."""

from __future__ import annotations

from collections import Counter

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
