"""`newsletter recipients check CSV` and `newsletter suppress`: the command layer above
`recipients` (CSV files) and `journal` (the state file), so neither has to import the other.
`recipients check`: the CSV's bad rows, then each row the state file would skip (unsubscribed,
bounced, complained, suppressed by hand) with why and since when. `suppress`: addresses given
or read from a CSV, checked as a recipient's are, into the suppression list.
(`recipients export` and `suppress --export` are newsletter/export.py.)
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import click

from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal
from newsletter.recipients import (
    RecipientReport,
    check_address,
    clean_text,
    format_report,
    plural,
    read_rows,
    scan_csv,
)
from newsletter.runlist import RunList
from newsletter.suppressions import Suppressions

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


def run_suppress(
    cfg: Config, addresses: tuple[str, ...], csv_path: Path | None, export: Path | None = None
) -> None:
    """`newsletter suppress ADDRESS… [--csv FILE] [--export FILE]`: never send to these
    addresses again; --export writes the whole list as CSV (after any additions)."""
    if not addresses and csv_path is None:
        if export is not None:
            from newsletter.export import run_suppress_export

            return run_suppress_export(cfg, None if str(export) == "-" else export)
        raise NewsletterError(
            "give one or more ADDRESSES, --csv FILE with an email column, or --export FILE."
        )
    wanted: list[tuple[str, str]] = []  # (address, reason)
    for address in addresses:
        try:
            email, _ = check_address(address)
        except ValueError as err:
            raise NewsletterError(f"{err}. Nothing was suppressed; fix it and run again.") from None
        wanted.append((email, "by hand (newsletter suppress)"))
    bad: list[str] = []
    if csv_path is not None:
        _, rows, warnings = read_rows(csv_path)
        for row in rows:
            written = clean_text(row.cells.get("email", ""))
            if written.startswith("'="):  # a cell an export defused for spreadsheets
                written = written[1:]
            try:
                email, _ = check_address(written)
            except ValueError as err:
                bad.append(f"{csv_path}:{row.line}: {err}; skipped")
                continue
            # An export's reason column (suppress --export, recipients export) is kept.
            reason = clean_text(row.cells.get("reason", "")).removeprefix("'")
            wanted.append((email, reason or f"imported from {csv_path.name}"))
        for w in warnings:
            click.echo(f"warning: {w}", err=True)
    with Journal(cfg.path("state")) as journal:
        added = Suppressions(journal).add_many(wanted, kind="suppressed")
    for line in bad:
        click.echo(line, err=True)
    already = len(wanted) - added
    click.echo(
        f"Suppressed {plural(added, 'address', 'addresses')}"
        + (f" ({already} already {'was' if already == 1 else 'were'})" if already else "")
        + (f"; {plural(len(bad), 'bad row')} skipped" if bad else "")
        + f". They will not be sent to ({cfg.path('state')})."
    )
    if export is not None:
        from newsletter.export import run_suppress_export

        run_suppress_export(cfg, None if str(export) == "-" else export)
