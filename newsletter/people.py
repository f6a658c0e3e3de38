"""`newsletter recipients check CSV`: the command layer above `recipients` (CSV files) and
`journal` (the state file), so neither has to import the other: the CSV's bad rows, then each
row the state file would skip (unsubscribed, bounced, complained, suppressed by hand) with why
and since when. (`recipients export` is newsletter/export.py.)
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import click

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal
from newsletter.recipients import RecipientReport, format_report, plural, scan_csv
from newsletter.runlist import RunList

EXPORT_COLUMNS = ("email", "name", "language", "status", "reason", "since")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet would run these as formulas


def run_check(cfg: Config, csv_path: Path) -> None:
    """`newsletter recipients check CSV`: print the report; exit 1 when rows would be skipped.

    The rows go into a temporary SQLite table as they are read (runlist.RunList), as for a
    send: a list of a million is checked in a few MiB. Each row the state file would skip is
    named with its line, why and since when."""
    state = cfg.path("state")
    with contextlib.ExitStack() as stack:
        if state.exists():  # only look: a check creates no state file
            listed = stack.enter_context(Journal(state)).run_list()
        else:
            db = sqlite3.connect("", isolation_level=None)  # a temporary file, gone on close
            stack.callback(db.close)
            listed = RunList(db)
        report = RecipientReport(path=csv_path)
        listed.add(scan_csv(csv_path, cfg.defaults.language, report))
        report.duplicates = listed.dedupe()
        lines = format_report(report, listed.count(), listed.by_language())
        click.echo(lines[0])
        for line in lines[1:]:
            click.echo(line, err=line.startswith("warning: "))
        if state.exists():
            _suppressed_rows(listed, report.path, state, listed.chose_other_language())
    if report.problems:
        # Like `newsletter check`: non-zero so a script (or CI) notices rows that send would skip.
        raise NewsletterError(
            f"{plural(len(report.problems), 'bad row')} in {report.path}: send would skip "
            "them. Fix them and check again."
        )


def _suppressed_rows(listed: RunList, path: Path, state: Path, n_pref: int) -> None:
    """`FILE:LINE: address: bounced since DATE: reason (evidence); send skips it`, then counts."""
    kinds: dict[str, int] = {}
    with listed.lock:
        rows = listed.db.execute(
            "SELECT r.line, r.email, s.kind, s.reason, s.evidence, s.created_at "
            "FROM temp.run r JOIN suppressions s ON s.key = r.key ORDER BY r.seq"
        )
        for line, email, kind, reason, evidence, since in rows:
            word = _kind_word(kind)
            kinds[word] = kinds.get(word, 0) + 1
            why = reason + (f" ({evidence})" if evidence else "")
            click.echo(f"{path}:{line}: {email}: {word} since {since[:10]}: {why}; send skips it")
    if kinds or n_pref:
        skipped = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "0 unsubscribed"
        click.echo(
            f"{state}: {skipped} (send skips them), {n_pref} chose the other "
            "language (send uses their choice)."
        )


def _kind_word(kind: str) -> str:
    return "suppressed by hand" if kind == "suppressed" else kind
