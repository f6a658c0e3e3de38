"""A pool of relays ([[smtp.relay]]): spread by weight, each relay's own rate and password, a
relay that stops mid-run drained and its messages moved, nobody sent twice across the pool."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from newsletter.config import load_config
from newsletter.errors import NewsletterError
from tests.conftest import SmtpServer, _authenticator, _Handler, start_smtp
from tests.test_send import FakeClock, run, setup_project, states

N = 60
ROWS = "email,name,language\n" + "".join(
    f"m{i:02d}@example.org,Member {i},{'es' if i % 2 else 'en'}\n" for i in range(N)
)
EVERYONE = {f"m{i:02d}@example.org" for i in range(N)}


class Relay:
    """An aiosmtpd server on 127.0.0.1 that can be stopped from one of its own hooks."""

    def __init__(self) -> None:
        self.server = SmtpServer("127.0.0.1", 0)
        self.controller = start_smtp(
            self.server,
            _Handler(self.server),
            authenticator=_authenticator(self.server),
            auth_require_tls=False,
        )
        self.stopped = threading.Event()

    def stop(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.controller.stop()

    def stop_soon(self) -> None:
        """From a hook (the server's own loop): stop it from another thread."""
        threading.Thread(target=self.stop, daemon=True).start()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    three = [Relay() for _ in range(3)]
    try:
        yield three
    finally:
        for r in three:
            r.stop()


def write_pool(project, monkeypatch, entries: list[dict]) -> None:
    """The project's settings with a [[smtp.relay]] pool instead of [smtp] host."""
    setup_project(project, monkeypatch, csv=ROWS, security="none", timeout=2, retries=2)
    lines = [(project / "newsletter.toml").read_text()]
    for e in entries:
        lines.append("[[smtp.relay]]")
        for key, value in e.items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    (project / "newsletter.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def entry(name: str, relay: Relay, **more) -> dict:
    """A [[smtp.relay]] entry for one of the test's servers."""
    return {"name": name, "host": "127.0.0.1", "port": relay.server.port, "security": "none"} | more


def received(relays: list[Relay]) -> Counter:
    return Counter(a.lower() for r in relays for m in r.server.received for a in m.rcpt_tos)


def test_messages_are_spread_by_weight(project, monkeypatch, relays):
    """Over a run the shares follow the weights, whatever each relay's speed (b has twice the
    connections, yet takes its share only)."""
    a, b, c = relays
    n = 600
    rows = "".join(f"w{i:03d}@example.org,W {i},es\n" for i in range(n))
    write_pool(
        project,
        monkeypatch,
        [entry("a", a, weight=1), entry("b", b, weight=2, connections=2), entry("c", c, weight=3)],
    )
    (project / "members.csv").write_text("email,name,language\n" + rows, encoding="utf-8")
    out = run(FakeClock())
    assert out.sent == n and sum(received(relays).values()) == n
    assert all(v == 1 for v in received(relays).values())
    shares = [len(r.server.received) / n for r in relays]
    for got, want in zip(shares, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(got - want) < 0.06, shares
    assert set(states(project).values()) == {"sent"}


def test_a_relay_stopped_mid_run_is_drained_and_nobody_is_sent_twice(
    project, monkeypatch, relays
):
    a, b, c = relays
    write_pool(
        project,
        monkeypatch,
        [entry(r, x, connections=2) for r, x in zip("abc", relays, strict=True)],
    )

    def stop_b(rec):
        if len(b.server.received) >= 5:  # b goes away with messages on its lines
            b.stop_soon()

    b.server.on_data = stop_b
    out = run(FakeClock())
    got = received(relays)
    assert all(n == 1 for n in got.values())  # never twice, across the pool
    uncertain = {address for address, _ in out.uncertain}
    # Everyone delivered exactly once or reported (uncertain: b may have taken it).
    assert set(got) | uncertain == EVERYONE
    assert not out.failed and not out.not_reached
    assert len(a.server.received) + len(c.server.received) > N / 2  # b's share moved on
    st = states(project)
    assert {k for k, s in st.items() if s == "in_flight"} == uncertain
    assert {k for k, s in st.items() if s == "sent"} == EVERYONE - uncertain


def test_with_every_relay_down_the_run_stops_and_says_so(project, monkeypatch, relays):
    for r in relays:
        r.stop()
    write_pool(
        project,
        monkeypatch,
        [entry(r, x) for r, x in zip("abc", relays, strict=True)],
    )
    with pytest.raises(NewsletterError, match="cannot connect"):
        run(FakeClock())
    assert "sent" not in states(project).values()


def test_each_relay_has_its_rate_and_its_password(project, monkeypatch, relays):
    a, b, _ = relays
    b.server.auth = ("nalacc", "b-secret")
    write_pool(
        project,
        monkeypatch,
        [entry("slow-a", a, rate=1.0), entry("b", b, username="nalacc")],
    )
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD_B", "b-secret")
    clock = FakeClock()
    start = clock.now
    out = run(clock)
    assert out.sent == N and received(relays) == dict.fromkeys(EVERYONE, 1)
    # a takes at most one message a second of the run's (fake) time; b takes the rest.
    assert 1 <= len(a.server.received) <= clock.now - start + 1
    assert len(b.server.received) > len(a.server.received)


def test_relay_settings_are_checked_like_the_others(project, monkeypatch):
    write_pool(project, monkeypatch, [{"name": "a", "host": "h", "weight": 0}])
    with pytest.raises(NewsletterError, match=r"\[\[smtp.relay\]\] #1 \(a\) weight must be"):
        load_config()
    write_pool(project, monkeypatch, [{"name": "a", "host": "h", "password": "x"}])
    with pytest.raises(NewsletterError, match="NEWSLETTER_SMTP_PASSWORD_A"):
        load_config()
    write_pool(project, monkeypatch, [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}])
    with pytest.raises(NewsletterError, match="two relays named 'a'"):
        load_config()


def test_a_trial_into_the_outbox_is_sent_once_a_pool_is_set(project, monkeypatch, relays):
    """As with [smtp] host: copies written to the outbox before any relay was set count as a
    trial, and the first send through a pool sends them, once."""
    a, _, _ = relays
    setup_project(project, monkeypatch, csv=ROWS)  # no relay: the outbox
    assert run(FakeClock()).sent == N and not received(relays)
    write_pool(project, monkeypatch, [entry("a", a)])
    assert run(FakeClock()).sent == N
    assert received(relays) == dict.fromkeys(EVERYONE, 1)
    assert run(FakeClock()).sent == 0  # and not again
