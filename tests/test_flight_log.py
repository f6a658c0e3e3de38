"""The flight log as the parent reads it back (flightlog.read_flight): replies cleaned exactly as
clean_text cleans them, times exact across seconds (the parent's shortcuts for both)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from newsletter import flightlog
from newsletter.flightlog import REPLY_MAX, FlightLog, read_flight
from newsletter.recipients import clean_text

REPLIES = [
    "250 2.0.0 Ok: queued as 4Xy7Zk1",  # the usual: clean already
    "250  2.0.0  two spaces",
    " 250 leading space",
    "250 trailing space ",
    "451 bell\x07 and\ttab",
    "550 5.1.1 Benutzer unbekannt: ü\u202e",  # non-ASCII, a bidi override
    "250 " + "x" * 600,  # longer than REPLY_MAX
    "",
]


def test_replies_read_back_as_clean_text_makes_them(tmp_path):
    log = FlightLog(tmp_path / "s.db.flight-0")
    for i, reply in enumerate(REPLIES):
        log.outcome("a", f"m{i}@example.org", "failed", reply, "es")
    log.flush()
    log.close()
    rows, _ = read_flight(tmp_path / "s.db.flight-0")
    assert [row[6] for row in rows] == [clean_text(r)[:REPLY_MAX] for r in REPLIES]


@pytest.mark.parametrize("t", [1764489123.999999, 1764489124.0, 1764489123.5, 1764489124.000001])
def test_times_are_exact_whichever_second_came_before(t):
    expected = datetime.fromtimestamp(round(t * 1_000_000) / 1_000_000, UTC)
    for before in (t - 1, t, t + 1, t - 86400):  # the one-second memo holds another second
        flightlog._ts_posix(before)
        assert flightlog._ts_posix(t) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
