"""`newsletter recipients export`: every person the state file knows, as one CSV, so the
organisation can bring its own spreadsheet up to date (new web subscribers, unsubscribes,
language choices, addresses that must not be written to).

Columns: email, name, language, status, reason, since, source.
- status: active, or the suppression's kind: unsubscribed, bounced, complained, suppressed
  (by hand: `newsletter suppress`, an imported list);
- reason: the suppression's reason as recorded ("unsubscribe page", "one-click", "by hand …"),
  and for a bounce or complaint its evidence (status code and the server's words);
- since: when the person got that status (suppressed, confirmed on the web, first sent to);
- source: where the person came from: `list` (a recipient CSV a send used), the web sign-up's
  source (`form`, `forward`, `archive`, `embed`, `import`), or `suppression` (an address only
  ever suppressed, e.g. imported with `newsletter suppress --csv`).
- language: their own choice (language page, sign-up), else the language last sent to them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from newsletter import statefile
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.journal import Journal
from newsletter.suppressions import Suppressions

COLUMNS = ("email", "name", "language", "status", "reason", "since", "source")
# A cell a spreadsheet would run as a formula (a name typed into a public form can be anything).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def status_of(kind: str | None) -> str:
    """A person's status from their suppression's kind (None: not suppressed)."""
    return "active" if kind is None else kind


# A suppression's reason, and what proves it when there is evidence (a bounce, a complaint).
_REASON = "x.reason || CASE WHEN x.evidence <> '' THEN ': ' || x.evidence ELSE '' END"


def rows(j: Journal) -> list[tuple[str, ...]]:
    """One row per person (COLUMNS), in address order."""
    found = j._read(
        "SELECT c.email, c.name, coalesce(c.language_pref, s.language, d.lang, ''), x.kind, "
        f"{_REASON}, "
        "coalesce(x.created_at, s.confirmed_at, c.created_at), coalesce(s.source, 'list') "
        "FROM contacts c LEFT JOIN subscribers s ON s.contact_id = c.id "
        "LEFT JOIN suppressions x ON x.key = c.key "
        # The language of each one's latest delivery: one grouped pass, not a lookup per person.
        "LEFT JOIN (SELECT key, lang, max(updated_at) FROM deliveries GROUP BY key) d "
        "ON d.key = c.key "
        f"UNION ALL SELECT x.email, '', '', x.kind, {_REASON}, x.created_at, 'suppression' "
        "FROM suppressions x WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.key = x.key) "
        "ORDER BY 1"
    )
    return [
        (email, name, lang, status_of(kind), reason or "", _since(since), source)
        for email, name, lang, kind, reason, since, source in found
    ]


def _since(stamp: str) -> str:
    """`2026-11-30T12:00:00.123456Z` as `2026-11-30T12:00:00Z` (spreadsheets read it)."""
    return f"{stamp[:19]}Z" if stamp else ""


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def to_csv(table: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS) -> str:
    """The CSV text, header first; formula-like cells defused with a leading apostrophe."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in table)
    return buf.getvalue()


def run_export(cfg: Config, out: Path | None) -> None:
    """`newsletter recipients export [--out FILE]`: the CSV to FILE (UTF-8 with a BOM, so Excel
    reads accents), or to standard output."""
    state = cfg.path("state")
    if not state.exists():
        statefile.refuse_lost(state)  # gone, with backups beside it: say so
        raise NewsletterError(
            f"{state}: no state file yet, so nobody to export. Check [paths] state."
        )
    with Journal(state, secret=cfg.secret) as j:
        table = rows(j)
    if not write_csv(out, table, COLUMNS, "--out"):
        return
    counts: dict[str, int] = {}
    for row in table:
        counts[row[3]] = counts.get(row[3], 0) + 1
    summary = ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) or "nobody"
    click.echo(f"Wrote {out}: {len(table):,} people ({summary}).", err=True)


def write_csv(
    out: Path | None, table: list[tuple[str, ...]], columns: tuple[str, ...], option: str
) -> bool:
    """The table as CSV to `out` (UTF-8 with a BOM, so Excel reads accents; written whole or
    not at all, owner-only), or to standard output when None. True when a file was written."""
    from newsletter.content import write_atomic

    text = to_csv(table, columns)
    if out is None:
        click.echo(text, nl=False)
        return False
    try:
        write_atomic(out, "\ufeff" + text, private=True)
    except OSError as err:
        raise NewsletterError(
            f"{out}: cannot write it ({err.strerror}). Pick another {option}."
        ) from None
    return True


# `newsletter suppress --export`: the same columns and formats as above, the suppressions only.
SUPPRESSION_COLUMNS = ("email", "reason", "since")


def run_suppress_export(cfg: Config, out: Path | None) -> None:
    """`newsletter suppress --export FILE`: every suppressed address with why and since when,
    so the list can live outside the tool too (`newsletter suppress --csv FILE` reads it back,
    reasons included). Reads the state file without writing to it."""
    state = cfg.path("state")
    if not state.exists():
        statefile.refuse_lost(state)  # gone, with backups beside it: say so
        raise NewsletterError(
            f"{state}: no state file yet, so no suppression list to export. Check [paths] state."
        )
    with Journal(state, readonly=True) as j:
        table = [(s.email, s.reason, _since(s.created_at)) for s in Suppressions(j).rows()]
    if write_csv(out, table, SUPPRESSION_COLUMNS, "--export FILE"):
        click.echo(f"Wrote {out}: {len(table):,} suppressed addresses.", err=True)
