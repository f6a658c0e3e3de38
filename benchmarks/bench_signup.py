"""POST /s: how long the answer takes, by the state of the address (nothing should tell them apart).

A real state file in a temporary folder, the app through Flask's test client, sign-up emails
from the app's mail thread to a local SMTP sink (bench_send's: Postfix smtp-sink, else aiosmtpd),
drained between requests, as requests spaced in time see it. The states come in a shuffled order
each round, so a state's figure is its own request's, whatever came before; a last line compares
requests that follow a mailed one with those that follow one that was not. Prints the median and
90th percentile, in milliseconds:

    new         an address never seen: a confirmation email is queued
    member      on the list already (a CSV contact, and a confirmed web subscriber): email queued
    capped      asked within 24 h: no email
    bounced     suppressed after a bounce: no email
    unsubscribed  may join again: email queued

    .venv/bin/python benchmarks/bench_signup.py [N per state, default 200]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(n: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_send import start_sink

    from newsletter import web
    from newsletter.config import load_config
    from newsletter.contacts import Contacts
    from newsletter.journal import Journal
    from newsletter.suppressions import Suppressions

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("templates", "locale"):
            os.symlink(REPO / name, root / name)
        sink = start_sink()
        (root / "newsletter.toml").write_text(
            '[sender]\nfrom = "NALACC <alerts@nalacc.test>"\npostal_address = "1 Main St"\n'
            '[web]\nbase_url = "https://alerts.nalacc.test"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
            "[subscribe]\nper_network_per_hour = 100000\nwelcome = false\n",
            encoding="utf-8",
        )
        os.environ["NEWSLETTER_SECRET"] = "bench-secret-0123456789abcdef"
        cfg = load_config(root / "newsletter.toml")
        with Journal(cfg.path("state"), secret=cfg.secret) as j:
            for i in range(n):
                Contacts(j).add(f"member{i}@example.org", "Member")
                Suppressions(j).add(f"bounced{i}@example.org", "bounced: 550 5.1.1")
                Suppressions(j).add(f"left{i}@example.org", "unsubscribe page")
        app = web.create_app(cfg)
        client = app.test_client()

        def post(address: str, ip: str) -> float:
            t = time.perf_counter()
            r = client.post(
                "/s",
                data={"email": address, "lang": "es", "ui": "es"},
                headers={"X-Forwarded-For": ip},
            )
            took = time.perf_counter() - t
            assert r.status_code == 200
            r.close()  # as the server does once the answer is sent: the email is queued now
            mail = app.extensions.get("newsletter.mail")
            if mail is not None:
                mail.join()  # the email is out before the next request
            return took * 1000

        post("warm@example.org", "192.0.2.1")
        states = {
            "new": lambda i: f"new{i}@example.org",
            "member": lambda i: f"member{i}@example.org",
            "capped": lambda i: f"new{i}@example.org",  # the "new" ones again, within 24 h
            "bounced": lambda i: f"bounced{i}@example.org",
            "unsubscribed": lambda i: f"left{i}@example.org",
        }
        times: dict[str, list[float]] = {s: [] for s in states}
        after = {True: [], False: []}  # by whether the request before was mailed
        mailed = {"new": True, "member": True, "capped": False, "bounced": False}
        mailed["unsubscribed"] = True
        rng = random.Random(11)
        last = None
        try:
            for i in range(n):
                order = list(states)
                rng.shuffle(order)
                if "capped" in order and order.index("capped") < order.index("new"):
                    order.remove("capped")  # capped needs this round's "new" first
                    order.insert(order.index("new") + 1, "capped")
                for state in order:
                    ms = post(states[state](i), f"198.51.100.{i % 250}")
                    times[state].append(ms)
                    if last is not None:
                        after[mailed[last]].append(ms)
                    last = state
        finally:
            sink.close()
        print(f"POST /s, {n} requests per state, mail to {sink.kind} (ms): median, p90")
        for state, ts in times.items():
            ts.sort()
            print(f"  {state:13} {statistics.median(ts):6.2f}  {ts[int(len(ts) * 0.9)]:6.2f}")
        for was, ts in after.items():
            ts.sort()
            what = "after a mailed one" if was else "after an unmailed one"
            print(f"  {what:22} {statistics.median(ts):6.2f}  {ts[int(len(ts) * 0.9)]:6.2f}")
        sent = app.extensions["newsletter.mail"].sent
        print(f"confirmation emails taken by the sink: {sent} (expected {3 * n + 1})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
