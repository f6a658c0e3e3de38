"""`newsletter status ALERT`: the command layer over the journal (and bounces' report lines).

It reads the state file and prints; it writes nothing, so journal.py keeps only the state and
its rules, and this is the one place that knows how a send's counts are worded.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from newsletter import statefile
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal
from newsletter.recipients import plural
from newsletter.suppressions import Suppressions


def alert_id_of(cfg: Config, alert_path: str | Path) -> str:
    """The alert's id: content's own when the folder loads, else the folder's name.

    A missing or broken alert folder still has a status, so this never fails.
    """
    path = Path(alert_path)
    if path.exists():
        from newsletter.content import load_alert

        with contextlib.suppress(NewsletterError):
            return str(load_alert(cfg, path).id)
    return path.parent.name if path.name == "alert.toml" else path.name


def run_status(cfg: Config, alert_path: Path) -> None:
    """`newsletter status ALERT`: counts per state; failed and uncertain recipients listed."""
    alert_id = alert_id_of(cfg, alert_path)
    state = cfg.path("state")
    # No folder is fine for an alert sent earlier and deleted since; with nothing sent either,
    # it is a typo, not "nothing sent yet".
    no_folder = not Path(alert_path).is_dir() and not Path(alert_path).is_file()
    if not state.exists():
        statefile.refuse_lost(state)  # gone, with backups beside it: that is no "nothing sent"
        if no_folder:
            raise NewsletterError(
                f"{alert_path}: no such alert folder, and nothing was sent yet ({state} does not "
                "exist). Give the path to alerts/<id>/."
            )
        click.echo(f"{alert_id}: nothing sent yet ({state} does not exist).")
        return
    with Journal(state) as journal:
        counts = journal.counts(alert_id)
        if not any(counts.values()):
            known = ", ".join(journal.alerts()) or "none"
            if no_folder:
                raise NewsletterError(
                    f"{alert_path}: no such alert: no folder, and nothing was sent as "
                    f"{alert_id!r}. Alerts in {state}: {known}."
                )
            click.echo(f"{alert_id}: nothing sent yet. Alerts in {state}: {known}.")
            return
        unsubscribed = journal.unsubscribed_after(alert_id)
        by_reason = Suppressions(journal).counts()
        running = journal.send_running()
        # Suppressed since their row was written (often during a running send): they will
        # never be sent, so they are counted as such, not as pending for ever.
        blocked = journal.suppressed_unsent(alert_id)
        failed = [d for d in journal.rows(alert_id, ["failed"]) if d.key not in blocked]
        in_flight = journal.rows(alert_id, ["in_flight"])
        from newsletter.bounces.report import status_lines

        after = status_lines(cfg, journal, alert_id, counts["sent"])
    total = sum(counts.values())
    for status in blocked.values():
        counts[status] -= 1
    flight_word = "in flight" if running else "uncertain"
    parts = [
        f"{counts['sent']} sent",
        f"{counts['pending']} pending",
        f"{counts['retry']} to retry",
        f"{counts['failed']} failed",
        f"{counts['in_flight']} {flight_word}",
    ]
    if blocked:
        parts.append(f"{len(blocked)} suppressed (never sent)")
    click.echo(f"{alert_id}: {plural(total, 'recipient')}: {', '.join(parts)}.")
    if running:
        click.echo("A send is running now; these numbers are moving.")
    n = sum(unsubscribed.values())
    if n:
        how = ", ".join(f"{k} {r or 'no reason'}" for r, k in sorted(unsubscribed.items()))
        click.echo(f"Unsubscribed since they received it: {n} ({how}).")
    else:
        click.echo("Unsubscribed since they received it: none.")
    total_suppressed = sum(by_reason.values())
    how = ", ".join(f"{k} {r or 'no reason'}" for r, k in sorted(by_reason.items()))
    click.echo(
        f"Suppressed in {state.name} (never sent to): {total_suppressed}"
        + (f" ({how})." if how else ".")
    )
    if failed:
        click.echo("Failed (resend with --retry-failed):")
        for d in failed:
            click.echo(f"  {d.email}  {plural(d.attempts, 'attempt')}: {d.last_reply}")
    if in_flight and not running:
        click.echo(
            "Uncertain: handed to the server when a run stopped; they may have arrived. "
            "Resend with --retry-uncertain:"
        )
        for d in in_flight:
            click.echo(f"  {d.email}  since {_shown(d.updated_at)}")
    for line in after:
        click.echo(line)


def _shown(stamp: str) -> str:
    """`2026-11-28T09:00:00.000000Z` as `2026-11-28 09:00:00 UTC`."""
    return f"{stamp[:10]} {stamp[11:19]} UTC"
