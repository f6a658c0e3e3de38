"""The journal on real SQLite files: states, resume, suppression, preferences, forward caps."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import journal as journal_module
from newsletter.cli import cli
from newsletter.contacts import Contacts
from newsletter.errors import NewsletterError
from newsletter.forwards import Forwards
from newsletter.journal import Journal, timestamp
from newsletter.recipients import Recipient
from newsletter.suppressions import Suppressions
from tests.conftest import make_plan

ALERT = "2011-08-12-secure-communities"


def people(*emails: str, lang: str = "es") -> list[Recipient]:
    return [Recipient(e, e.lower(), f"Name {i}", lang, {}, i + 2) for i, e in enumerate(emails)]


def record(j: Journal, key: str, status: str, reply: str = "", attempts: int = 1, mid=None):
    """A delivery's state as a send leaves it: a flight-log row copied in (apply_flight)."""
    t = timestamp()
    j.apply_flight(
        [(ALERT, key, status, attempts, mid, "es", reply, t, t if status == "sent" else None)]
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "newsletter.db"  # a folder that does not exist yet


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):
    """The journal's clock, set by the test: clock.t = datetime(...)."""

    class Clock:
        t = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    c = Clock()
    monkeypatch.setattr(journal_module, "now", lambda: c.t)
    return c


# --- the file -------------------------------------------------------------------------------


def test_new_file_is_wal_and_versioned(db):
    with Journal(db):
        pass
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == journal_module.SCHEMA_VERSION
    con.close()


def test_a_newer_schema_is_refused(db):
    with Journal(db):
        pass
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(NewsletterError, match="newer newsletter"):
        Journal(db)


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    p = tmp_path / "newsletter.db"
    p.write_text("this is my shopping list\n" * 100)
    with pytest.raises(NewsletterError, match=r"newsletter\.db: not a usable newsletter state"):
        Journal(p)


def test_someone_elses_sqlite_file_is_not_taken_over(tmp_path):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE accounts (x)")
    con.commit()
    con.close()
    with pytest.raises(NewsletterError, match="not a newsletter journal"):
        Journal(p)
    con = sqlite3.connect(p)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["accounts"]
    con.close()


def test_many_openers_of_a_new_file_at_once(db):
    # the web server's threads, or `serve` and `send` started together, on a fresh setup
    errors: list[BaseException] = []
    barrier = threading.Barrier(6, timeout=30)

    def opener() -> None:
        try:
            barrier.wait()
            with Journal(db) as j:
                Suppressions(j).add("a@example.org", "x")
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not errors
    with Journal(db) as j:
        assert Suppressions(j).keys() == {"a@example.org"}


# --- contacts and language ------------------------------------------------------------------


def test_contact_upsert_is_case_insensitive_and_keeps_a_name(db):
    with Journal(db) as j:
        a = Contacts(j).add("Ana@Example.org", "Ana")
        assert Contacts(j).add("ana@example.ORG") == a
        c = Contacts(j).get(a)
        assert (c.email, c.key, c.name, c.language_pref) == (
            "ana@example.ORG",
            "ana@example.org",
            "Ana",
            None,
        )
        Contacts(j).add("ana@example.org", "Ana\r\nBcc: x@example.com")
        assert Contacts(j).get(a).name == "Ana Bcc: x@example.com"
        assert Contacts(j).find("ANA@example.org").id == a
        assert Contacts(j).get(a + 1000) is None


def test_language_preference_wins_over_the_csv_on_the_next_plan(db):
    with Journal(db) as j:
        plan = make_plan(j, ALERT, people("a@example.org", "b@example.org", lang="es"))
        assert [p.lang for p in plan["todo"]] == ["es", "es"]
        assert Contacts(j).set_language(Contacts(j).find(plan["todo"][1].recipient.email).id, "en")
        assert Contacts(j).language_prefs() == {"b@example.org": "en"}
        again = make_plan(j, "next-alert", people("a@example.org", "B@example.org", lang="es"))
        assert [p.lang for p in again["todo"]] == ["es", "en"]
        # a pending delivery of the first alert follows the new preference too
        assert [p.lang for p in make_plan(j, ALERT, people("b@example.org"))["todo"]] == ["en"]
        assert j.rows(ALERT, ["pending"])[1].lang == "en"
        assert not Contacts(j).set_language(99999, "en")
        with pytest.raises(ValueError):
            Contacts(j).set_language(Contacts(j).find(plan["todo"][0].recipient.email).id, "fr")


# --- the delivery state machine -------------------------------------------------------------


def test_resume_after_reopen(db):
    everyone = people(*(f"m{i}@example.org" for i in range(6)))
    with Journal(db) as j:
        make_plan(j, ALERT, everyone)
        record(j, "m0@example.org", "sent", "250", mid="<0>")
        record(j, "m1@example.org", "in_flight", mid="<1>")  # the run dies with this one
        record(j, "m2@example.org", "failed", "550 no", mid="<2>")
        record(j, "m3@example.org", "retry", "421 closing", mid="<3>")
    with Journal(db) as j:  # a new run, a new connection
        plan = make_plan(j, ALERT, everyone)
        keys = {name: [p.recipient.key for p in planned] for name, planned in plan.items()}
        assert keys == {
            "todo": ["m3@example.org", "m4@example.org", "m5@example.org"],
            "sent": ["m0@example.org"],
            "uncertain": ["m1@example.org"],
            "failed": ["m2@example.org"],
            "suppressed": [],
        }
        assert plan["todo"][0].status == "retry" and plan["todo"][0].attempts == 1
        assert plan["failed"][0].last_reply == "550 no"
        both = make_plan(j, ALERT, everyone, retry_failed=True, retry_uncertain=True)
        assert [p.recipient.key for p in both["todo"]][:2] == ["m1@example.org", "m2@example.org"]
        assert [p.recipient.key for p in both["sent"]] == ["m0@example.org"]
        assert [p.attempts for p in both["todo"]][:2] == [1, 1]  # the next try is attempt 2


def test_dry_run_plans_but_writes_nothing(db):
    with Journal(db) as j:
        plan = make_plan(j, ALERT, people("a@example.org", "b@example.org"), dry_run=True)
        assert len(plan["todo"]) == 2 and all(len(p.public_id) == 16 for p in plan["todo"])
        assert j.counts(ALERT)["pending"] == 0
        assert Contacts(j).find("a@example.org") is None


def test_plan_skips_suppressed_case_insensitively_but_keeps_sent_history(db):
    with Journal(db) as j:
        make_plan(j, ALERT, people("a@example.org", "b@example.org"))
        record(j, "a@example.org", "sent", "250")
        assert Suppressions(j).add("A@EXAMPLE.ORG", "one-click")
        assert Suppressions(j).add(" b@Example.org ", "unsubscribe page")
        plan = make_plan(j, ALERT, people("a@example.org", "b@example.org", "c@example.org"))
        assert [p.recipient.key for p in plan["sent"]] == ["a@example.org"]
        assert [p.recipient.key for p in plan["suppressed"]] == ["b@example.org"]
        assert [p.recipient.key for p in plan["todo"]] == ["c@example.org"]


def test_many_recipients_plan_in_one_transaction(db):
    many = people(*(f"r{i}@example.org" for i in range(5000)))
    with Journal(db) as j:
        plan = make_plan(j, ALERT, many)
        assert len(plan["todo"]) == 5000
        assert len({p.public_id for p in plan["todo"]}) == 5000
        assert j.rows(ALERT, ["pending"])[-1].key == "r4999@example.org"  # list order kept
        assert len(make_plan(j, ALERT, many)["todo"]) == 5000  # nothing new inserted twice


def test_a_later_list_adds_its_new_members_after_the_earlier_ones_in_its_own_order(db):
    """The plan numbers a list's new members after the alert's earlier deliveries, in the
    list's order, whatever order the rows are written in; members already planned keep their
    place and their row."""
    with Journal(db) as j:
        make_plan(j, ALERT, people("z@example.org", "m@example.org"))
        make_plan(
            j, ALERT, people("y@example.org", "M@example.org", "a@example.org", "b@example.org")
        )
        rows = j.rows(ALERT)
        assert [r.key for r in rows] == [
            "z@example.org",
            "m@example.org",
            "y@example.org",
            "a@example.org",
            "b@example.org",
        ]
        assert len(rows) == 5  # one row each


# --- suppression ------------------------------------------------------------------------------


def test_suppression_case_insensitive_with_reason_and_time(db, clock):
    with Journal(db) as j:
        assert Suppressions(j).add("Ana@Example.org", "one-click")
        assert not Suppressions(j).add("ana@example.org", "again")  # first reason kept
        assert Suppressions(j).has("ANA@example.ORG")
        s = Suppressions(j).get("ana@EXAMPLE.org")
        assert (s.email, s.reason, s.created_at) == (
            "Ana@Example.org",
            "one-click",
            "2026-11-28T09:00:00.000000Z",
        )
        assert Suppressions(j).keys() == {"ana@example.org"}
        assert Suppressions(j).remove("ANA@example.org")
        assert not Suppressions(j).remove("ana@example.org")
        assert not Suppressions(j).has("ana@example.org")
    with Journal(db) as j:
        assert Suppressions(j).keys() == set()


# --- forwards ---------------------------------------------------------------------------------


def test_forward_counts_per_contact_and_ip_per_day(db, clock):
    with Journal(db, secret="s" * 32) as j:
        me = Contacts(j).add("me@example.org")
        Forwards(j).record(me, "203.0.113.7", ALERT, 3)
        clock.t += timedelta(hours=5)
        Forwards(j).record(None, "203.0.113.7", ALERT, 2)  # an anonymous forward, same IP
        Forwards(j).record(me, "198.51.100.1", ALERT, 1)
        assert Forwards(j).since(contact_id=me) == 4
        assert Forwards(j).since(ip="203.0.113.7") == 5
        assert Forwards(j).since(contact_id=me, ip="203.0.113.7") == 3
        assert Forwards(j).since(ip="192.0.2.1") == 0
        clock.t += timedelta(hours=20)  # the first forward is now 25 hours old
        assert Forwards(j).since(contact_id=me) == 1
        assert Forwards(j).since(ip="203.0.113.7") == 2
        since = clock.t - timedelta(hours=30)
        assert Forwards(j).since(contact_id=me, since=since) == 4
        assert Forwards(j).total(ALERT) == 6
        with pytest.raises(ValueError):
            Forwards(j).since()


def test_forward_ips_are_never_stored_and_their_hashes_expire(db, clock):
    with Journal(db, secret="s" * 32) as j:
        Forwards(j).record(None, "203.0.113.7", ALERT, 1)
    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.is_file())
    assert b"203.0.113.7" not in raw
    with Journal(db, secret="s" * 32) as j:
        assert Forwards(j).since(ip="203.0.113.7") == 1
    with Journal(db, secret="another secret, other hashes") as j:
        assert Forwards(j).since(ip="203.0.113.7") == 0
    with Journal(db, secret="s" * 32) as j:
        clock.t += timedelta(days=3)
        Forwards(j).record(None, "198.51.100.1", ALERT, 1)  # erases hashes older than 2 days
        hashes = [h for (h,) in j._read("SELECT ip_hash FROM forwards ORDER BY id")]
        assert hashes[0] is None and hashes[1] is not None
        assert Forwards(j).total(ALERT) == 2  # the counts stay


# --- threads and processes ----------------------------------------------------------------


def test_concurrent_threads_share_one_journal(db):
    """Copies of flight logs, unsubscribes (another connection, as `serve`) and forward counts
    from many threads at once: nothing lost, nothing refused."""
    n_threads, per_thread = 8, 40
    keys = [f"t{t}-{i}@example.org" for t in range(n_threads) for i in range(per_thread)]
    errors: list[BaseException] = []
    with Journal(db) as j:
        make_plan(j, ALERT, people(*keys))
        other = Journal(db)  # a second connection, as `newsletter serve` would hold

        def sender(t: int) -> None:
            try:
                for i in range(per_thread):
                    key = f"t{t}-{i}@example.org"
                    if i % 10 == 0:
                        record(j, key, "retry", "451 later", attempts=1)
                        record(j, key, "sent", "250", attempts=2)
                    else:
                        record(j, key, "sent", "250")
                    if i % 8 == 0:
                        Suppressions(other).add(f"u{t}-{i}@example.org", "one-click")
                        Forwards(j).record(None, f"10.0.0.{t}", ALERT, 1)
            except BaseException as err:  # reported below: a thread's exception is otherwise lost
                errors.append(err)

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads)
        other.close()
        assert not errors
        assert j.counts(ALERT)["sent"] == n_threads * per_thread
        assert sum(d.attempts for d in j.rows(ALERT)) == n_threads * (per_thread + 4)
        assert len(Suppressions(j).keys()) == n_threads * 5
        assert Forwards(j).total(ALERT) == n_threads * 5


_CHILD = """
import os, sys, time
from newsletter.flightlog import FlightLog
from newsletter.journal import Journal
from newsletter.recipients import Recipient
j = Journal(sys.argv[1])
j.acquire_send_lock()
listed = j.run_list()
listed.add([Recipient("x@example.org", "x@example.org", "X", "es", {}, 2)])
j.plan_run("a")
FlightLog(j.flight_path(0)).mark("a", "x@example.org", "<x>", "es", 1)
print("ready", flush=True)
time.sleep(60)
"""


def test_send_lock_and_in_flight_survive_kill_9(db):
    db.parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with Journal(db) as j:
            assert j.send_running()
            with pytest.raises(NewsletterError, match=rf"pid {child.pid}\) is using"):
                j.acquire_send_lock()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
    with Journal(db) as j:
        assert not j.send_running()
        j.acquire_send_lock()  # the kernel freed the dead process's lock
        plan = make_plan(j, "a", [Recipient("x@example.org", "x@example.org", "X", "es", {}, 2)])
        assert [p.recipient.key for p in plan["uncertain"]] == ["x@example.org"]
        with Journal(db) as second, pytest.raises(NewsletterError, match="is using"):
            second.acquire_send_lock()
    with Journal(db) as j:
        j.acquire_send_lock()  # close() released it


# --- commands -----------------------------------------------------------------------------


def test_cli_status_without_a_state_file(project):
    result = CliRunner().invoke(cli, ["status", f"alerts/{ALERT}"])
    assert result.exit_code == 0, result.output
    assert "nothing sent yet" in result.output
    assert not Path("newsletter.db").exists()  # looking does not create it


def test_cli_status_counts_failures_and_uncertain(project):
    with Journal("newsletter.db") as j:
        make_plan(j, ALERT, people("a@example.org", "b@example.org", "c@example.org", "d@example.org"))
        record(j, "a@example.org", "sent", "250")
        record(j, "b@example.org", "failed", "550 5.1.1 <b@example.org>: no such user")
        record(j, "c@example.org", "in_flight", mid="<3>")  # left in flight
        make_plan(j, "other-alert", people("z@example.org"))
    result = CliRunner().invoke(cli, ["status", f"alerts/{ALERT}"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{ALERT}: 4 recipients: 1 sent, 1 pending, 0 to retry, 1 failed, 1 uncertain." in out
    assert "b@example.org  1 attempt: 550 5.1.1 <b@example.org>: no such user" in out
    assert "--retry-uncertain" in out
    assert re.search(r"\n  c@example\.org  since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", out)
    # A typo is an error (it said "nothing sent yet" and exited 0), with the alerts it knows.
    unknown = CliRunner().invoke(cli, ["status", "alerts/2030-01-01-nothing"])
    assert unknown.exit_code == 1
    assert "alerts/2030-01-01-nothing: no such alert" in unknown.output
    assert f"Alerts in {Path.cwd() / 'newsletter.db'}: {ALERT}, other-alert." in unknown.output
    # A folder deleted after its send still has a status.
    gone = CliRunner().invoke(cli, ["status", "alerts/other-alert"])
    assert gone.exit_code == 0 and "other-alert: 1 recipient: 0 sent, 1 pending" in gone.output


def test_cli_status_for_an_unknown_alert_without_a_state_file_is_an_error(project):
    result = CliRunner().invoke(cli, ["status", "alerts/nope"])
    assert result.exit_code == 1 and "alerts/nope: no such alert folder" in result.output
    assert not Path("newsletter.db").exists()


def test_cli_status_shows_unsubscribes_and_suppressions(project):
    with Journal("newsletter.db") as j:
        make_plan(j, ALERT, people("a@example.org", "b@example.org", "c@example.org"))
        for who in ("a@example.org", "b@example.org", "c@example.org"):
            record(j, who, "sent", "250")
        Suppressions(j).add("a@example.org", "one-click")
        Suppressions(j).add("b@example.org", "unsubscribe page")
        Suppressions(j).add("old@example.org", "by hand (newsletter suppress)")
        # A bounce after the alert is no unsubscribe (the bounce lines count it).
        Suppressions(j).add("c@example.org", "bounced: address gone (1 hard bounce)", kind="bounced")
    out = CliRunner().invoke(cli, ["status", f"alerts/{ALERT}"]).output
    assert "Unsubscribed since they received it: 2 (1 one-click, 1 unsubscribe page)." in out
    assert "Suppressed in newsletter.db (never sent to): 4 (1 bounced" in out
    assert "a@example.org" not in out  # counts, not who


def test_cli_suppress_addresses_and_csv(project):
    runner = CliRunner()
    result = runner.invoke(cli, ["suppress", "Ana@Example.org", "b@example.org"])
    assert result.exit_code == 0, result.output
    assert "Suppressed 2 addresses" in result.output
    Path("unsubscribed.csv").write_text(
        "Name;E-mail\nAna;ANA@example.org\nBad;nope@\nCé;c@example.org\n", encoding="utf-8"
    )
    result = runner.invoke(cli, ["suppress", "--csv", "unsubscribed.csv"])
    assert result.exit_code == 0, result.output
    assert "Suppressed 1 address (1 already was); 1 bad row skipped" in result.output
    assert "unsubscribed.csv:3: invalid address 'nope@'" in result.output
    with Journal("newsletter.db") as j:
        assert Suppressions(j).keys() == {"ana@example.org", "b@example.org", "c@example.org"}
        assert Suppressions(j).get("c@example.org").reason == "imported from unsubscribed.csv"


def test_cli_suppress_refuses_a_bad_address_and_writes_nothing(project):
    result = CliRunner().invoke(cli, ["suppress", "ok@example.org", "not an address"])
    assert result.exit_code == 1
    assert (
        "invalid address 'not an address'" in result.output
        and "Nothing was suppressed" in result.output
    )
    assert "Traceback" not in result.output
    assert not Path("newsletter.db").exists()


def test_cli_suppress_needs_something(project):
    result = CliRunner().invoke(cli, ["suppress"])
    assert result.exit_code == 1 and "give one or more ADDRESSES" in result.output
    result = CliRunner().invoke(cli, ["suppress", "--csv", "x.csv"])
    assert result.exit_code == 1 and "x.csv: no such file" in result.output
