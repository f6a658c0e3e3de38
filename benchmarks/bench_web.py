"""How the public pages (`newsletter serve`) hold up. Prints figures; not a test.

    python benchmarks/bench_web.py [--alerts 300] [--requests 200] [--slow 300]

1. The archive index with N alerts that went out: the first GET (reads every alert) and the
   following ones (served as rendered while nothing changed), in the app (Flask's test client)
   and through `newsletter serve` over HTTP on 127.0.0.1 (what a reader waits for).
2. The forward form's answer time when a friend unsubscribed and when they never subscribed
   (forwards go to the outbox here): it must not tell them apart.
3. A member's own links and the confirmation button, by the state of the person the signed
   token names (member, unsubscribed, not in this file, a bad token): median per state, in the
   app. The answers differ by design (each is the link holder's own page); the figures show
   what each costs.
4. Slow clients: --slow connections to `newsletter serve` that send half a request and stall;
   meanwhile a one-click unsubscribe POST is timed, then how long the server keeps the stalled
   connections (its channel timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "alerts" / "2011-08-12-secure-communities"
SECRET = "bench-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, n_alerts: int, port: int) -> list[str]:
    """A project with n_alerts copies of the seed alert (each its own date), all sent."""
    for name in ("templates", "locale"):
        shutil.copytree(REPO / name, root / name)
    (root / "newsletter.toml").write_text(
        "[sender]\n"
        'from = "NALACC <alerts@nalacc.example.org>"\n'
        'postal_address = "NALACC, 1 Example Street, Chicago, IL 60601"\n'
        "[web]\n"
        f'base_url = "http://127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    ids = []
    day = date(2011, 8, 12)
    for i in range(n_alerts):
        alert_id = f"{day + timedelta(days=7 * i)}-alert-{i}"
        shutil.copytree(SEED, root / "alerts" / alert_id)
        toml = root / "alerts" / alert_id / "alert.toml"
        text = toml.read_text(encoding="utf-8")
        toml.write_text(
            text.replace("date = 2011-08-12", f"date = {day + timedelta(days=7 * i)}", 1), encoding="utf-8"
        )
        ids.append(alert_id)
    return ids


def mark_sent(root: Path, ids: list[str]) -> int:
    """The journal as after a send of each alert that reached one member; the member's id."""
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal, timestamp
    from newsletter.recipients import Recipient

    ana = Recipient("ana@example.org", "ana@example.org", "Ana", "es", {}, 2)
    with Journal(root / "newsletter.db") as j:
        j.run_list().add([ana])  # the send's path: the list, then each alert's plan
        for alert_id in ids:
            j.plan_run(alert_id)
            t = timestamp()
            j.apply_flight([(alert_id, ana.key, "sent", 1, "<m@example.org>", "es", "250", t, t)])
        return Contacts(j).add(ana.email)


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:.2f} ms, max {max(xs) * 1000:.2f} ms"


def bench_index_in_app(root: Path, requests: int) -> None:
    from newsletter import web
    from newsletter.config import load_config

    client = web.create_app(load_config(root / "newsletter.toml")).test_client()
    t0 = time.perf_counter()
    first = client.get("/")
    cold = time.perf_counter() - t0
    assert first.status_code == 200
    warm = []
    for _ in range(requests):
        t0 = time.perf_counter()
        resp = client.get("/")
        warm.append(time.perf_counter() - t0)
        assert resp.status_code == 200
    print(f"  in the app:   first GET {cold * 1000:8.1f} ms; then {ms(warm)} ({requests} GETs)")


def bench_forward_timing(root: Path, member: int, n: int) -> None:
    import re

    from newsletter import links, web
    from newsletter.config import load_config
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal
    from newsletter.suppressions import Suppressions

    app = web.create_app(load_config(root / "newsletter.toml"))
    app.config.update(FORWARDS_PER_TOKEN_PER_DAY=10**6, FORWARDS_PER_IP_PER_DAY=10**6)
    client = app.test_client()
    with Journal(root / "newsletter.db") as j:
        person = Contacts(j).public_id(member)
        Suppressions(j).add("gone@example.org", "bench")
    alert_id = sorted(p.name for p in (root / "alerts").iterdir())[0]
    token = links.make_token(SECRET, "forward", person, alert_id, "es")
    page = client.get(f"/f/{token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    times: dict[str, list[float]] = {"unsubscribed": [], "never subscribed": []}
    bodies = set()
    for i in range(n):
        for kind, friend in (("unsubscribed", "gone@example.org"),
                             ("never subscribed", f"new{i}@example.org")):
            data = {"csrf": csrf, "to": ["luis@example.org", friend], "name": "Ana", "lang": "es"}
            t0 = time.perf_counter()
            resp = client.post(f"/f/{token}", data=data)
            times[kind].append(time.perf_counter() - t0)
            bodies.add((resp.status_code, resp.get_data()))
    same = "identical" if len(bodies) == 1 else f"{len(bodies)} different"
    print(f"  two friends, one of them unsubscribed: {ms(times['unsubscribed'])}")
    print(f"  two friends, both never subscribed:    {ms(times['never subscribed'])}")
    print(f"  ({n} of each, interleaved; status and page {same})")


def bench_token_states(root: Path, n: int) -> None:
    from newsletter import links, subscribers, web
    from newsletter.config import load_config
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal
    from newsletter.suppressions import Suppressions

    app = web.create_app(load_config(root / "newsletter.toml"))
    client = app.test_client()
    alert_id = sorted(p.name for p in (root / "alerts").iterdir())[0]
    ids: dict[str, list[str]] = {"member": [], "unsubscribed": [], "not in this file": []}
    with Journal(root / "newsletter.db") as j:
        for i in range(n):
            member = Contacts(j).add(f"m{i}@example.org", "M")
            gone = Contacts(j).add(f"u{i}@example.org", "U")
            Suppressions(j).add(f"u{i}@example.org", "bench")
            ids["member"].append(Contacts(j).public_id(member))
            ids["unsubscribed"].append(Contacts(j).public_id(gone))
            ids["not in this file"].append(f"{10**9 + i:032x}")
            Contacts(j).add(f"cm{i}@example.org", "CM")  # for the confirmation button
            Contacts(j).add(f"cu{i}@example.org", "CU")
            Suppressions(j).add(f"cu{i}@example.org", "bench")

    def toks(purpose: str) -> dict[str, list[str]]:
        out = {k: [links.make_token(SECRET, purpose, p, alert_id, "es") for p in v]
               for k, v in ids.items()}
        out["bad token"] = [t[:-4] + "AAAA" for t in out["member"]]
        return out

    def run(label: str, method: str, tokens: dict[str, list[str]], path: str, data: dict) -> None:
        times: dict[str, list[float]] = {k: [] for k in tokens}
        codes: dict[str, set[int]] = {k: set() for k in tokens}
        for i in range(n):
            for kind, ts in tokens.items():  # interleaved: each state sees the same load
                t0 = time.perf_counter()
                resp = client.open(path.format(ts[i]), method=method, data=data)
                resp.get_data()
                times[kind].append(time.perf_counter() - t0)
                codes[kind].add(resp.status_code)
        for kind in tokens:
            line = f"  {label:26} {kind:17} {ms(times[kind])}  status {sorted(codes[kind])}"
            print(line, file=sys.__stdout__)

    unsub = toks("unsubscribe")
    run("GET /u/<token>", "GET", unsub, "/u/{}", {})
    run("one-click POST /u/<token>", "POST", unsub, "/u/{}", {"List-Unsubscribe": "One-Click"})
    run("GET /l/<token>", "GET", toks("language"), "/l/{}", {})
    now = time.time() - 60  # the sign-ups were asked for before the unsubscribes above
    signups = {
        kind: [
            subscribers.make_confirm_token(
                SECRET, subscribers.SignUp(f"{p}{i}@example.org", "C", "es", "form"), now
            )
            for i in range(n)
        ]
        for kind, p in (("new address", "c"), ("member", "cm"), ("unsubscribed", "cu"))
    }
    signups["bad token"] = [t[:-4] + "AAAA" for t in signups["new address"]]
    with contextlib.redirect_stdout(io.StringIO()):  # the welcomes go to the outbox, quietly
        run("confirm POST /c/<token>", "POST", signups, "/c/{}", {})
        mail = app.extensions.get("newsletter.mail")
        if mail is not None:
            mail.join()


def start_serve(root: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port), *extra],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("newsletter serve did not start within 30 s")


def bench_index_over_http(root: Path, port: int, requests: int) -> None:
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        resp.read()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(requests):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as resp:
            resp.read()
        warm.append(time.perf_counter() - t0)
    print(f"  over HTTP:    first GET {cold * 1000:8.1f} ms; then {ms(warm)} ({requests} GETs)")


def threads_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("Threads:")[1].split()[0]
    except (OSError, IndexError):
        return "?"


def bench_slow_clients(root: Path, port: int, n: int, member: int, pid: int) -> None:
    from newsletter import links
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal

    with Journal(root / "newsletter.db") as j:
        person = Contacts(j).public_id(member)
    token = links.make_token(SECRET, "unsubscribe", person, "x", "es")
    stalled = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
        stalled.append(s)
    opened = time.perf_counter() - t0
    body = urllib.parse.urlencode({"List-Unsubscribe": "One-Click"}).encode()
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/u/{token}", data=body, timeout=60):
            answered = time.perf_counter() - t0
            outcome = f"answered 200 in {answered * 1000:.1f} ms"
    except OSError as err:
        outcome = f"NOT answered within 60 s ({err})"
    print(f"  {n} half-sent requests opened in {opened * 1000:.0f} ms; one-click unsubscribe "
          f"POST meanwhile: {outcome}; the server has {threads_of(pid)} threads")
    # How long the server keeps them: each stalled socket sees EOF when the server drops it.
    t0 = time.perf_counter()
    deadline = t0 + 180
    open_left = list(stalled)
    while open_left and time.perf_counter() < deadline:
        still = []
        for s in open_left:
            s.settimeout(0.01)
            try:
                if s.recv(1024) == b"":
                    s.close()
                    continue
            except TimeoutError:
                pass
            except OSError:
                s.close()
                continue
            still.append(s)
        open_left = still
        time.sleep(0.2)
    dropped = n - len(open_left)
    print(f"  the server dropped {dropped} of {n} stalled connections within "
          f"{time.perf_counter() - t0:.0f} s")
    for s in open_left:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--forwards", type=int, default=30, help="forward POSTs of each kind")
    ap.add_argument("--slow", type=int, default=300, help="stalled connections (0: skip)")
    a = ap.parse_args()
    print(f"newsletter serve benchmark — {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="nl-bench-web-") as tmp:
        root = Path(tmp)
        port = free_port()
        ids = make_project(root, a.alerts, port)
        member = mark_sent(root, ids)
        os.environ["NEWSLETTER_SECRET"] = SECRET
        print(f"\nArchive index, {len(ids)} alerts that went out:")
        bench_index_in_app(root, a.requests)
        print("\nForward form (to the outbox):")
        bench_forward_timing(root, member, a.forwards)
        print("\nA member's links and the confirmation button, by the state the token names:")
        bench_token_states(root, a.forwards)
        proc = start_serve(root, port)
        try:
            bench_index_over_http(root, port, a.requests)
            if a.slow:
                print("\nSlow clients:")
                bench_slow_clients(root, port, a.slow, member, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
