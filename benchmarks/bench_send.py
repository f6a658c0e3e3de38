"""How fast `newsletter send` builds and sends, and how much memory it needs. Prints figures.

    python benchmarks/bench_send.py [--recipients 10000] [--big 1000000] [--runs 3] [--quick]

Against a local sink on 127.0.0.1: Postfix's `smtp-sink` when installed, else an aiosmtpd sink.
Where `smtp-source` exists it sends the same number and size of messages over the same number of
connections, and our rate is printed as a ratio of its rate: the median of --runs runs of each,
interleaved (smtp-source alone swings by 3x between runs on a small machine). Two ratios: the
delivery loop alone (messages / seconds from the first message to the last), and the whole
command the user waits for (messages / wall seconds of the child process, from interpreter start
to the summary: imports, check, render, CSV, plan, delivery, state file). Beside them, the CPU
(user + system) the whole command cost per message, its sender processes and check included,
and smtp-sink's meanwhile: on a machine shared with other work, wall times swing, CPU hardly.

Also: `newsletter --help` and `newsletter check` wall times (median of 5), and `newsletter
recipients check` of a --big-row CSV (wall time and the process's peak RSS).

Each send runs in a child Python process. Its memory is the peak, sampled every 20 ms, of the
PSS (proportional set size, /proc/<pid>/smaps_rollup) summed over that process and every process
it forked (the sender workers): PSS splits copy-on-write pages shared after a fork between the
processes sharing them, so the sum is what the whole tree takes, counting no page twice. That
sum is the figure held to the memory target. The send process's own peak RSS (VmHWM) is
printed beside it; it no longer covers the workers. Not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALERT = "alerts/2011-08-12-secure-communities"
SECRET = "bench-secret-0123456789abcdef"
TARGET_RATIO = {1: 0.7, 4: 0.5}  # the whole command against smtp-source, per K (issue 12)
TARGET_BUILD, TARGET_MIB = 5000, 150

# Run in a child process so its figures are the send's alone. VmHWM here is this process's
# own peak RSS: the sender processes it forks are measured from outside (TreeSampler).
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from newsletter import campaign, pool
from newsletter.config import load_config
k = int(sys.argv[1]); csv = sys.argv[2]
before = {}
deliver = pool.Pool.deliver
def hwm():  # this process's peak RSS in MiB: VmHWM is this program's own (ru_maxrss is not: Linux
    # carries the bench process's peak into a child across fork and exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
def measured(*a, **kw):  # peak so far when sending starts: render, check, CSV, plan
    before["mib"] = hwm()
    return deliver(*a, **kw)
pool.Pool.deliver = measured
t0 = time.perf_counter()
out = campaign.run_send(load_config(), Path(sys.argv[3]), Path(csv), yes=True, connections=k)
total = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"sent": out.sent, "failed": len(out.failed), "elapsed": out.elapsed,
                  "total": total, "before_mib": before.get("mib"), "maxrss_mib": hwm(),
                  # user + system seconds of the send and every process it started and waited
                  # for (the senders, the check): the CPU the whole command cost
                  "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime}))
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

    def cpu(self) -> float | None:
        """User + system seconds smtp-sink has used so far (None for the in-process sink)."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rindex(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
    # A real send refuses example.org placeholders: stand-ins on .test, as the tests do.
    for toml in (root / "alerts").glob("*/alert.toml"):
        toml.write_text(toml.read_text(encoding="utf-8").replace("example.org", "nalacc.test"))
    lines = [
        "[sender]",
        'from = "NALACC <alerts@nalacc.test>"',
        'postal_address = "NALACC, 1638 S Blue Island Ave, Chicago, IL 60608"',
        "[web]",
        'base_url = "https://alerts.nalacc.test"',
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


_VANISHED = (FileNotFoundError, ProcessLookupError, PermissionError)


def pss_kib(pid: int) -> int | None:
    """The `Pss:` of /proc/<pid>/smaps_rollup in KiB; None if gone, unreadable or a zombie."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except _VANISHED:
        return None
    return None  # a zombie's smaps_rollup has no Pss line: it holds no memory


def _children_by_task(pid: int) -> list[int]:
    # Every thread's list: a child forked from a thread other than the main one is listed
    # under that thread's task, not under /proc/<pid>/task/<pid>/children.
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except _VANISHED:
        return kids
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                kids += [int(c) for c in f.read().split()]
        except _VANISHED:
            continue
    return kids


def _children_by_ppid() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except _VANISHED:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])  # comm may hold spaces and ')'
        kids.setdefault(ppid, []).append(int(name))
    return kids


_HAS_CHILDREN_FILE = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants that exist now (a snapshot: processes come and go)."""
    by_ppid = None if _HAS_CHILDREN_FILE else _children_by_ppid()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += _children_by_task(p) if by_ppid is None else by_ppid.get(p, [])
    return tree


class TreeSampler(threading.Thread):
    """Peak of the PSS summed over a process and its descendants, sampled every `interval` s."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name=f"pss-{pid}")
        self.pid, self.interval = pid, interval
        self.peak_kib, self.peak_procs, self.samples = 0, 0, 0
        self.root_read = False  # the root's smaps_rollup was read at least once
        self.error: BaseException | None = None
        self._done = threading.Event()

    def sample(self) -> None:
        total = procs = 0
        for p in process_tree(self.pid):
            kib = pss_kib(p)
            if kib is None:
                continue
            self.root_read |= p == self.pid
            total += kib
            procs += 1
        self.samples += 1
        if total > self.peak_kib:
            self.peak_kib, self.peak_procs = total, procs

    def run(self) -> None:
        try:
            while True:
                self.sample()
                if self._done.wait(self.interval):
                    return
        except BaseException as e:  # reported by stop(): a dead sampler must not look like 0 MiB
            self.error = e

    def stop(self) -> tuple[float | None, int]:
        """(peak PSS of the tree in MiB, processes at that peak); None if it could not be read."""
        self._done.set()
        self.join()
        if self.error is not None:
            print(f"  (memory sampler failed: {self.error!r})")
            return None, 0
        if not self.root_read:
            return None, 0
        return self.peak_kib / 1024, self.peak_procs


def pss_readable() -> bool:
    return pss_kib(os.getpid()) is not None


def clear_state(root: Path) -> None:
    """No state file, backups or logs of an earlier run: each send starts from scratch."""
    for f in root.glob("newsletter.db*"):
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()


def child_send(root: Path, csv: Path, k: int, *, sample_memory: bool = True) -> dict:
    """One `newsletter send` in a child process; its JSON figures, plus `tree_pss_mib`.

    With sample_memory, a thread here reads the PSS of the child and all its descendants every
    20 ms: `tree_pss_mib` is the peak of their sum (None where /proc/<pid>/smaps_rollup cannot be
    read) and `tree_procs` the number of processes at that peak. Without it (the rate runs, so
    the sampling costs the send no CPU), both are None.
    """
    clear_state(root)
    env = os.environ | {"NEWSLETTER_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(k), str(csv), ALERT],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.perf_counter()
    sampler = TreeSampler(proc.pid) if sample_memory else None
    if sampler is not None:
        sampler.start()
    try:
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tree = sampler.stop() if sampler is not None else (None, None)
    if proc.returncode != 0:
        raise SystemExit(f"send failed:\n{stdout}\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["tree_pss_mib"], result["tree_procs"] = tree
    result["wall"] = wall  # the whole command, interpreter start to exit
    return result


def command_wall(root: Path, *args: str, runs: int = 5) -> float:
    """Median wall seconds of `newsletter ARGS` (the installed script's interpreter) in root."""
    exe = [sys.executable, "-c", "from newsletter.cli import main; main()", *args]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(exe, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def recipients_check(root: Path, csv: Path) -> tuple[float, float, str]:
    """`newsletter recipients check CSV`: (wall seconds, peak RSS in MiB, its first line)."""
    clear_state(root)
    t0 = time.perf_counter()
    # The peak RSS is the command's VmHWM, written to stderr as it exits: the child's ru_maxrss
    # would start from this process's own peak (Linux carries it across fork and exec).
    code = (
        "import atexit, sys\n"
        "def hwm():\n"
        "    with open('/proc/self/status') as f:\n"
        "        sys.stderr.write(next(l for l in f if l.startswith('VmHWM:')))\n"
        "atexit.register(hwm)\n"
        "from newsletter.cli import main; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "recipients", "check", str(csv)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    kib = next((int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("VmHWM:")), 0)
    out = proc.stdout
    return wall, kib / 1024, out.splitlines()[0] if out else ""


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

        # Each member's public id, as the plan hands it to the senders (random, 32 hex digits).
        ids = [secrets.token_hex(16) for _ in people]
        t0 = time.perf_counter()
        for i, p in enumerate(people):
            member = links.member_links(
                cfg,
                alert_id=ed.alert_id,
                lang="es",
                person=ids[i],
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


def mark_us(root: Path, n: int = 1000) -> float:
    """Mean µs of one in-flight mark here: an outcome and a mark appended to a connection's
    flight log with one write and one fdatasync (flightlog.FlightLog), as each message pays."""
    from newsletter.flightlog import FlightLog

    log = FlightLog(root / "bench.flight-0")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            log.outcome("a", f"m{i}@example.org", "sent", "250 2.0.0 Ok", "es")
            log.mark("a", f"m{i + 1}@example.org", f"<{i}@example.org>", "es", 1)
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        log.close()


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


def rates(xs: list[float]) -> str:
    return " ".join(f"{x:,.0f}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument(
        "--big",
        type=int,
        default=1_000_000,
        help="recipients for the K=4 memory figure and the recipients check (K=1: 100,000)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs of our send and of smtp-source per K; the ratio is of medians "
        "(default 3; 1 with --quick)",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 and 10,000 instead, one run")
    a = ap.parse_args()
    if a.quick:
        a.recipients, a.big = 1_000, 10_000
    big1 = min(a.big, 100_000)
    runs = a.runs if a.runs is not None else (1 if a.quick else 3)
    if runs < 1:
        ap.error("--runs must be at least 1")
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
                "(each one marked in flight on disk first);"
            )
            print(
                f"  {runs} run(s) per K of ours and of smtp-source (same message size and "
                "connections), interleaved; the ratio is of the medians:"
            )
            fsync = mark_us(root)
            print(
                f"  one in-flight mark (a write and an fdatasync of the connection's flight "
                f"log) here: {fsync:,.0f} µs; each message waits for one before its data goes"
            )
            have_source = True
            for k in (1, 4):
                ours: list[float] = []
                whole: list[float] = []
                cpu: list[float] = []  # µs of CPU a message: our whole command
                sink_cpu: list[float] = []  # µs of CPU a message: smtp-sink, during our send
                refs: list[float] = []
                pairs: list[tuple[float, float]] = []  # (whole, smtp-source) of one round
                sent = failed = 0
                for _ in range(runs):
                    sink_before = sink.cpu()
                    r = child_send(root, root / "send.csv", k, sample_memory=False)
                    ours.append(r["sent"] / r["elapsed"])
                    whole.append(r["sent"] / r["wall"])
                    cpu.append(r["cpu"] / r["sent"] * 1e6)
                    if sink_before is not None and (sink_after := sink.cpu()) is not None:
                        sink_cpu.append((sink_after - sink_before) / r["sent"] * 1e6)
                    sent, failed = sent + r["sent"], failed + r["failed"]
                    if have_source:
                        ref = smtp_source_rate(sink, sample, a.recipients, k)
                        if ref is None:
                            have_source = False
                        else:
                            refs.append(ref)
                            pairs.append((whole[-1], ref))
                mine, end = statistics.median(ours), statistics.median(whole)
                print(
                    f"  K={k}: ours, delivery {mine:8,.0f} msg/s median of [{rates(ours)}]  "
                    f"({sent / runs:,.0f} sent and {failed / runs:,.0f} failed per run)"
                )
                print(
                    f"       ours, whole    {end:8,.0f} msg/s median of [{rates(whole)}]  "
                    f"(start to summary: {a.recipients / end:.2f} s)"
                )
                # CPU, unlike wall time, hardly moves with what else the machine runs.
                at_sink = (
                    f"; smtp-sink {statistics.median(sink_cpu):,.0f} µs a message meanwhile"
                    if sink_cpu
                    else ""
                )
                print(
                    f"       CPU            {statistics.median(cpu):8,.0f} µs a message, the whole "
                    f"command (send, senders, check) median of [{rates(cpu)}]{at_sink}"
                )
                if not have_source:
                    print("       smtp-source not installed: no ratio")
                    continue
                ref = statistics.median(refs)
                print(f"       smtp-source    {ref:8,.0f} msg/s median of [{rates(refs)}]")
                each = " ".join(f"{w / s_:.2f}" for w, s_ in pairs)
                print(
                    f"       ours/smtp-source: delivery {mine / ref:.2f}, whole command "
                    f"{end / ref:.2f} (target ≥ {TARGET_RATIO[k]}; whole/source per round: "
                    f"{each})"
                )

            print("\nQuick commands (wall, median of 5, interpreter start included):")
            print(f"  newsletter --help: {command_wall(root, '--help'):.2f} s")
            print(f"  newsletter check:  {command_wall(root, 'check', ALERT):.2f} s")

            readable = pss_readable()
            print(
                "\nPeak memory of a whole send, recipient list included: PSS summed over "
                "the send process and the sender processes it forks (sampled every 20 ms; the "
                f"target ≤ {TARGET_MIB} MiB at 1,000,000 at K=4 is for this sum); the send process's "
                "own peak RSS beside it. K=1 is the default ([smtp] connections = 1: the sender "
                "is a thread); each further connection is a process of its own:"
            )
            if not readable:
                print(
                    "  /proc/<pid>/smaps_rollup is not readable here: the tree's figure is "
                    "unavailable; only the send process's own RSS is shown (not the workers')"
                )
            for k, n in ((1, 1_000), (1, big1), (4, 1_000), (4, a.big)):
                write_csv(root / "mem.csv", n)
                r = child_send(root, root / "mem.csv", k, sample_memory=readable)
                tree = (
                    f"tree {r['tree_pss_mib']:6.1f} MiB PSS over {r['tree_procs']} process(es)"
                    if r["tree_pss_mib"] is not None
                    else "tree PSS unavailable"
                )
                before = f"{r['before_mib']:.1f} MiB" if r["before_mib"] is not None else "n/a"
                print(
                    f"  K={k} {n:>7,} recipients: {tree}; send process {r['maxrss_mib']:6.1f} MiB "
                    f"peak RSS, {before} before the first message (render, check, CSV, plan); "
                    f"{r['sent'] / r['elapsed']:,.0f} msg/s"
                )

            write_csv(root / "mem.csv", a.big)
            wall, rss, line = recipients_check(root, root / "mem.csv")
            print(
                f"\n`newsletter recipients check` of {a.big:,} rows: {wall:.1f} s, peak RSS "
                f"{rss:.1f} MiB ({line})"
            )
        finally:
            sink.close()


if __name__ == "__main__":
    main()
