"""Bounces parsed per second, and `newsletter bounces read` over a Maildir of 10,000 bounces.

Run: .venv/bin/python benchmarks/bench_bounces.py [N]   (default 10,000)

The Maildir is built from the real messages in tests/fixtures/bounces (every format there, in
turn), each rewritten to be about one of N members of a state file that has sent them an
alert, with our Message-ID in it, so the whole command does all its work: parse, classify,
match through the journal, record, decide, suppress. Prints:
- parse + classify alone, messages per second (one process, no I/O);
- the whole command as the user waits for it (a subprocess, wall time), and its peak memory;
- the same command again on the same Maildir (all read before: the idempotent path).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.bounces.classify import classify  # noqa: E402
from newsletter.bounces.parse import parse  # noqa: E402
from newsletter.journal import Journal, timestamp  # noqa: E402
from newsletter.recipients import Recipient  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "bounces"
DOMAIN = "nalacc.example.org"


def templates() -> list[tuple[bytes, bytes]]:
    """(message, the address it is about) for every fixture that names one address."""
    out = []
    for p in sorted(FIXTURES.glob("*/*")):
        if p.suffix not in (".txt", ".eml"):
            continue
        data = p.read_bytes()
        r = parse(data)
        addresses = {f.address for f in r.failures if f.address}
        if len(addresses) == 1:
            out.append((data, addresses.pop().encode()))
    return out


def build(folder: Path, n: int) -> None:
    """A state file with n members sent one alert, and a Maildir of one bounce about each."""
    maildir = folder / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    people = [
        Recipient(f"m{i}@example.org", f"m{i}@example.org", "", "es", {}, i + 2) for i in range(n)
    ]
    ids = [f"<{uuid.uuid4().hex}@{DOMAIN}>" for _ in range(n)]
    with Journal(folder / "newsletter.db") as j:
        j.run_list().add(people)  # the send's path: the list, then the plan
        j.plan_run("bench-alert")
        t = timestamp()
        j.apply_flight(
            [
                ("bench-alert", p.key, "sent", 1, mid, "es", "250", t, t)
                for p, mid in zip(people, ids, strict=True)
            ],
            durable=True,
        )
    tpl = templates()
    for i, (p, mid) in enumerate(zip(people, ids, strict=True)):
        data, address = tpl[i % len(tpl)]
        msg = data.replace(address, p.email.encode())
        # Our Message-ID in the returned headers, and a Message-ID of its own per bounce.
        # A Message-ID of its own first (each bounce is another message), ours at the end.
        msg = (
            f"Message-ID: <bench-{i}@mx.example.net>\n".encode()
            + msg
            + f"\n\n--- returned headers ---\nMessage-ID: {mid}\n".encode()
        )
        (maildir / "new" / f"{i}.bench:2,").write_bytes(msg)
    (folder / "newsletter.toml").write_text(
        f'[sender]\nfrom = "NALACC <alerts@{DOMAIN}>"\n[bounces]\naddress = "bounces@{DOMAIN}"\n'
    )


def parse_rate(maildir: Path, limit: int) -> tuple[int, float]:
    files = sorted((maildir / "new").iterdir())[:limit]
    blobs = [f.read_bytes() for f in files]
    start = time.perf_counter()
    for data in blobs:
        r = parse(data)
        for f in r.failures:
            classify(f.status, f.diagnostic, f.temporary)
    return len(blobs), time.perf_counter() - start


def run_command(folder: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "newsletter"), "bounces", "read", "Maildir"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build(folder, n)
        print(
            f"built a Maildir of {n:,} real bounces ({len(templates())} formats) and a state "
            f"file of {n:,} deliveries in {time.perf_counter() - t0:.1f} s"
        )
        count, secs = parse_rate(folder / "Maildir", n)
        print(f"parse + classify only: {count:,} messages in {secs:.2f} s = {count / secs:,.0f}/s")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        secs, out = run_command(folder)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print(
            f"`newsletter bounces read Maildir` (whole command, {n:,} messages): {secs:.2f} s "
            f"= {n / secs:,.0f} messages/s, peak RSS {max(peak, before) / 1024:.0f} MiB"
        )
        print("  " + "\n  ".join(out.strip().splitlines()[:3]))
        secs, out = run_command(folder)
        print(f"again, all read before: {secs:.2f} s = {n / secs:,.0f} messages/s")
        print("  " + out.strip().splitlines()[1])


if __name__ == "__main__":
    main()
