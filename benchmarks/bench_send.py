"""How fast `newsletter send` builds and sends, and how much memory it needs. Prints figures.

    python benchmarks/bench_send.py [--recipients 10000] [--big 100000] [--quick]

Against a local sink on 127.0.0.1: Postfix's `smtp-sink` when installed, else an aiosmtpd sink.
Where `smtp-source` exists it sends the same number and size of messages over the same number of
connections, and our rate is printed as a ratio of its rate. Not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALERT = "alerts/2011-08-12-secure-communities"
SECRET = "bench-secret-0123456789abcdef"
TARGET_RATIO, TARGET_BUILD, TARGET_MIB = 0.5, 5000, 150

# Run in a child process so its peak memory (ru_maxrss) is the send's alone.
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from newsletter import campaign
from newsletter.config import load_config
k = int(sys.argv[1]); csv = sys.argv[2]
before = {}
deliver = campaign._deliver
def measured(*a, **kw):  # peak so far when sending starts: render, check, CSV, plan
    before["mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return deliver(*a, **kw)
campaign._deliver = measured
t0 = time.perf_counter()
out = campaign.run_send(load_config(), Path(sys.argv[3]), Path(csv), yes=True, connections=k)
total = time.perf_counter() - t0
print(json.dumps({"sent": len(out.sent), "failed": len(out.failed), "elapsed": out.elapsed,
                  "total": total, "before_mib": before.get("mib", 0.0),
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"sink on 127.0.0.1:{port} did not start")


@dataclass
class Sink:
    port: int
    kind: str
    proc: subprocess.Popen | None = None
    stop: object = field(default=None, repr=False)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.stop is not None:
            self.stop()  # type: ignore[operator]


def start_sink() -> Sink:
    port = free_port()
    exe = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if exe:
        cmd = [exe]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root
        cmd += [f"127.0.0.1:{port}", "1000"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return Sink(port, "Postfix smtp-sink", proc=proc)
    from aiosmtpd.controller import Controller

    class Discard:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            return "250 OK"

    c = Controller(Discard(), hostname="127.0.0.1", port=port)
    c.start()
    return Sink(port, "aiosmtpd sink (no smtp-sink here)", stop=c.stop)


def make_project(root: Path, sink: Sink | None) -> None:
    for name in ("alerts", "templates", "locale"):
        shutil.copytree(REPO / name, root / name)
    lines = [
        "[sender]",
        'from = "NALACC <alerts@nalacc.example.org>"',
        'postal_address = "NALACC, 1638 S Blue Island Ave, Chicago, IL 60608"',
        "[web]",
        'base_url = "https://alerts.example.org"',
        "[smtp]",
        'security = "none"',
        "timeout = 30",
    ]
    if sink is not None:
        lines += ['host = "127.0.0.1"', f"port = {sink.port}"]
    (root / "newsletter.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write("email,first_name,last_name,language,city\n")
        for i in range(n):
            lang = "es" if i % 3 else "en"
            f.write(f"member{i}@example.org,María José,Núñez {i},{lang},Los Ángeles\n")


def child_send(root: Path, csv: Path, k: int) -> dict:
    for f in root.glob("newsletter.db*"):
        f.unlink()
    env = os.environ | {"NEWSLETTER_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(k), str(csv), ALERT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"send failed:\n{out.stdout}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_rate(root: Path, n: int) -> tuple[float, float, float, int, Path]:
    """Messages built per second (one core): fill+MIME only, with signed links, EmailMessage."""
    os.environ["NEWSLETTER_SECRET"] = SECRET
    cwd = os.getcwd()
    os.chdir(root)
    try:
        from email.message import EmailMessage

        from newsletter import links, message, render, tokens
        from newsletter.config import load_config
        from newsletter.recipients import read_csv

        cfg = load_config()
        ed = render.render_editions(cfg, ALERT)["es"]
        prep = message.prepare(cfg, ed)
        people = read_csv(root / "build.csv").recipients
        fixed = render.sample_links(cfg, ed)

        t0 = time.perf_counter()
        for p in people:
            _, data = prep.build(p, fixed)
        fill_rate = len(people) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for i, p in enumerate(people):
            member = links.member_links(
                cfg,
                alert_id=ed.alert_id,
                lang="es",
                contact_id=i,
                subject=ed.subject,
                forward_body=ed.forward_body,
                language_subject=ed.language_subject,
                unsubscribe_subject=ed.unsubscribe_subject,
            )
            prep.build(p, member)
        links_rate = len(people) / (time.perf_counter() - t0)

        m = 300  # the `email` package, as the docs warn: build the same message its way
        t0 = time.perf_counter()
        for p in people[:m]:
            values = prep.values(p, fixed)
            em = EmailMessage()
            em["From"], em["To"], em["Subject"] = cfg.sender.from_, p.email, ed.subject
            em.set_content(tokens.fill(ed.text, values, escape_html=False))
            em.add_alternative(tokens.fill(ed.html, values, escape_html=True), subtype="html")
            em.as_bytes()
        email_ms = (time.perf_counter() - t0) / m * 1000
        sample = root / "sample.eml"
        # smtp-source -F appends CRLF to each line: give it LF lines of the real message.
        sample.write_bytes(data.replace(b"\r\n", b"\n"))
        return fill_rate, links_rate, email_ms, len(data), sample
    finally:
        os.chdir(cwd)


def commit_us(root: Path, n: int = 300) -> float:
    """Mean µs of one durable SQLite commit here (WAL, synchronous=FULL: one fsync), as `begin`."""
    import sqlite3

    db = sqlite3.connect(root / "fsync.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER)")
        db.executemany("INSERT INTO t VALUES (?, 0)", ((i,) for i in range(n)))
        t0 = time.perf_counter()
        for i in range(n):
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE t SET v = v + 1 WHERE k = ?", (i,))
            db.execute("COMMIT")
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        db.close()


def smtp_source_rate(sink: Sink, sample: Path, n: int, k: int) -> float | None:
    exe = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
    )
    if not exe:
        return None
    t0 = time.perf_counter()
    subprocess.run(
        [
            exe,
            "-d",
            "-s",
            str(k),
            "-m",
            str(n),
            "-F",
            str(sample),
            "-f",
            "alerts@nalacc.example.org",
            "-t",
            "member@example.org",
            f"127.0.0.1:{sink.port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000, help="recipients for the memory figure")
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 instead")
    a = ap.parse_args()
    if a.quick:
        a.recipients, a.big = 1_000, 10_000
    cores = os.cpu_count() or 1
    print(f"newsletter send benchmark — {cores} cores, Python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp:
        root = Path(tmp)
        sink = start_sink()
        try:
            make_project(root, sink)
            write_csv(root / "build.csv", 20_000)
            fill, with_links, email_ms, size, sample = build_rate(root, 20_000)
            print(f"\nBuild (one core, no network, {size / 1024:.1f} KiB message):")
            print(f"  fill + MIME:               {fill:8,.0f} msg/s  (target ≥ {TARGET_BUILD:,})")
            print(f"  with signed links (3 HMAC):{with_links:8,.0f} msg/s")
            print(
                f"  EmailMessage.as_bytes():   {1000 / email_ms:8,.0f} msg/s  "
                f"({email_ms:.2f} ms per message)"
            )

            write_csv(root / "send.csv", a.recipients)
            print(
                f"\nSend {a.recipients:,} recipients to {sink.kind} on 127.0.0.1 "
                "(journal fsync'd per message):"
            )
            fsync = commit_us(root)
            print(
                f"  a bare durable SQLite commit (WAL, FULL: one fsync) here: {fsync:,.0f} µs; "
                "each message waits for one (its in-flight mark, shared by up to K)"
            )
            ours = {}
            for k in (1, 4):
                r = child_send(root, root / "send.csv", k)
                ours[k] = r["sent"] / r["elapsed"]
                print(
                    f"  K={k}: {ours[k]:8,.0f} msg/s delivering  "
                    f"({r['sent']:,} sent, {r['failed']} failed; {r['total']:.1f} s in all "
                    f"with render, CSV and plan)"
                )

            print("\nsmtp-source, same message size and connections:")
            for k in (1, 4):
                ref = smtp_source_rate(sink, sample, a.recipients, k)
                if ref is None:
                    print("  smtp-source not installed: no ratio")
                    break
                ratio = ours[k] / ref
                print(
                    f"  K={k}: smtp-source {ref:8,.0f} msg/s; ours/smtp-source = {ratio:.2f} "
                    f"(target ≥ {TARGET_RATIO})"
                )

            print("\nPeak memory of a whole send (ru_maxrss, recipient list included):")
            for n in (1_000, a.big):
                write_csv(root / "mem.csv", n)
                r = child_send(root, root / "mem.csv", 4)
                print(
                    f"  {n:>7,} recipients: {r['maxrss_mib']:6.1f} MiB "
                    f"(target ≤ {TARGET_MIB} MiB at 100,000); {r['before_mib']:.1f} MiB "
                    f"before the first message (render, check, CSV, plan); "
                    f"{r['sent'] / r['elapsed']:,.0f} msg/s"
                )
        finally:
            sink.close()


if __name__ == "__main__":
    main()
