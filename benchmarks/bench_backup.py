"""What the state file's backup costs a send: `Journal.backup` (SQLite's online backup API, a
self-contained copy, fsync'd and renamed) on a state file of N members, each sent one alert,
with 5 % of them unsubscribed. A send makes two (before and after); the figure is per backup.

    .venv/bin/python benchmarks/bench_backup.py [N ...]     # default: 10000 100000
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from newsletter import statefile
from newsletter.journal import Journal
from newsletter.recipients import Recipient
from newsletter.suppressions import Suppressions


def state_of(path: Path, n: int) -> None:
    people = [
        Recipient(f"m{i}@example.org", f"m{i}@example.org", f"Member {i}", "es", {}, i + 2)
        for i in range(n)
    ]
    with Journal(path) as j:
        j.run_list().add(people)  # the send's path: the list, then the plan
        j.plan_run("2026-12-04-dream-act")
        j._write("UPDATE deliveries SET status = 'sent', sent_at = updated_at")
        Suppressions(j).add_many((p.email, "one-click") for p in people[::20])


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp) / "newsletter.db"
            state_of(state, n)
            times = []
            with Journal(state) as j:
                for _ in range(5):
                    t0 = time.perf_counter()
                    j.backup("bench")
                    times.append(time.perf_counter() - t0)
            size = state.stat().st_size / 2**20
            kept = len(statefile.backups(state))
            print(
                f"{n:>7,} members, state file {size:6.1f} MiB: backup "
                f"min {min(times) * 1000:7.1f} ms, max {max(times) * 1000:7.1f} ms "
                f"(5 runs, {kept} kept)"
            )


if __name__ == "__main__":
    main()
