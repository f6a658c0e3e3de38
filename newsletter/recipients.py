"""Recipient CSVs read into validated recipients; every bad row reported with its line, then skipped.

Real-world files work: UTF-8 with or without BOM, else Windows-1252 (with a warning); `,` `;` or
tab; header names in any case with stray spaces; blank lines; quoted fields with commas and
newlines. Line numbers are the physical line where a record starts, as an editor shows it.
"""

from __future__ import annotations

import codecs
import csv
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from newsletter.errors import NewsletterError

LANGUAGES = ("es", "en")

# What people write in a language column, folded to lower case. Region tags (es-MX, en_US) are
# cut to their first part before the lookup.
LANGUAGE_NAMES = {
    "es": "es",
    "spa": "es",
    "spanish": "es",
    "español": "es",
    "espanol": "es",
    "castellano": "es",
    "en": "en",
    "eng": "en",
    "english": "en",
    "inglés": "en",
    "ingles": "en",
}

# Header names (after normalising) that mean one of the known columns.
COLUMN_ALIASES = {
    "email": "email",
    "e_mail": "email",
    "email_address": "email",
    "mail": "email",
    "correo": "email",
    "correo_electronico": "email",
    "correo_electrónico": "email",
    "e_mail_address": "email",
    "name": "name",
    "full_name": "name",
    "nombre_completo": "name",
    "first_name": "first_name",
    "firstname": "first_name",
    "given_name": "first_name",
    "nombre": "first_name",  # Spanish lists pair it with apellido(s)
    "last_name": "last_name",
    "lastname": "last_name",
    "surname": "last_name",
    "family_name": "last_name",
    "apellido": "last_name",
    "apellidos": "last_name",
    "language": "language",
    "lang": "language",
    "idioma": "language",
    "lengua": "language",
}

DELIMITERS = (",", ";", "\t")
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators: any of them in a
# name could end a header line or break the text part, so they become a space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Invisible format characters (Unicode category Cf): bidi overrides and isolates (U+202E shows
# "Ana" + reversed text, so a name can read as something else in a To: line or a greeting),
# zero-width spaces and joiners, soft hyphen, BOM, tags. Removed, as the forward note's cleaning
# removes them. Listed here (Unicode 15) because computing the set means a scan of every code
# point at import; a test checks it against the running Python's unicodedata. Cost: an emoji
# joined with U+200D shows as its parts, a Persian name loses its U+200C (it still reads).
_INVISIBLE = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One valid row: address as written (trimmed), its lowercase key, name, language, fields."""

    email: str
    key: str
    name: str
    language: str
    fields: dict[str, str]
    line: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A row that is skipped (or a duplicate sent once): where, which address, and why."""

    line: int
    email: str
    reason: str


@dataclass
class RecipientReport:
    """What a CSV held: the recipients to send to, and everything wrong with the rest."""

    path: Path
    recipients: list[Recipient] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def by_language(self) -> dict[str, int]:
        """Recipients per language, in LANGUAGES order."""
        counts = dict.fromkeys(LANGUAGES, 0)
        for r in self.recipients:
            counts[r.language] += 1
        return counts


@dataclass(frozen=True, slots=True)
class Row:
    """One raw record: its starting line and its cells by normalised column name."""

    line: int
    cells: dict[str, str]
    error: str = ""  # set when the record cannot be read into the columns


def clean_text(value: str) -> str:
    """A name or field made safe for a header line and honest on screen: control characters and
    CR/LF become spaces, invisible format characters (bidi overrides, zero-width…) go."""
    if not value:
        return ""
    if value.isprintable():  # the common case, ~10x quicker: nothing to remove (see below)
        return value.strip() if "  " not in value else _SPACES.sub(" ", value).strip()
    return _clean_slow(value)


def _clean_slow(value: str) -> str:
    """clean_text by its rules. A printable string (str.isprintable: no character of Unicode's
    "Other" categories Cc, Cf, Cs, Co, Cn, nor a separator but the ASCII space) holds nothing
    _CONTROL or _INVISIBLE match, and no whitespace but spaces: clean_text skips this for it
    (tests/test_recipients.py holds both to the same answer)."""
    if not value.isascii():
        value = _INVISIBLE.sub("", value)
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def normalise_column(name: str) -> str:
    """`  First Name ` -> `first_name`; known aliases map to email, name, language…"""
    key = _SPACES.sub("_", name.replace("\ufeff", "").strip().lower()).replace("-", "_")
    return COLUMN_ALIASES.get(key, key)


def parse_language(value: str, default: str) -> str | None:
    """`es`/`en` (also `Español`, `english`, `es-MX`…); empty -> default; unknown -> None."""
    v = value.strip().lower()
    if not v:
        return default
    if v in LANGUAGE_NAMES:  # the usual "es"/"en": no split
        return LANGUAGE_NAMES[v]
    v = re.split(r"[-_]", v, maxsplit=1)[0]
    return LANGUAGE_NAMES.get(v)


# The fast path of check_address: a plain ASCII address that email-validator (with the options
# check_address gives it) is sure to accept as written. Local part: a dot-atom of RFC 5322 atext
# (email-validator's DOT_ATOM_TEXT); domain: two or more LDH labels of 1-63 characters, none
# starting or ending with a hyphen, the last ending with a letter. What it leaves out goes to
# email-validator: "--" anywhere in the domain (IDNA's R-LDH and xn-- rules), special-use names
# (.test, .local, …), and lengths past 253 for the domain or 254 for the address.
# tests/test_recipients.py holds both paths to the same answer over a generated corpus.
_FAST_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,61})?[A-Za-z])"
)


@functools.cache
def _special_tlds() -> frozenset[str]:
    """The last labels of email-validator's special-use names: a domain ending in one of them
    takes the slow path (all of today's are one label: arpa, invalid, local, onion…)."""
    from email_validator import SPECIAL_USE_DOMAIN_NAMES

    return frozenset(d.rsplit(".", 1)[-1] for d in SPECIAL_USE_DOMAIN_NAMES)


def _surely_valid(address: str) -> bool:
    """True only for an address email-validator accepts unchanged (see _FAST_ADDRESS)."""
    m = _FAST_ADDRESS.fullmatch(address)
    if m is None or len(address) > 254:
        return False
    domain = m[1]
    return (
        len(domain) <= 253
        and "--" not in domain
        and domain[domain.rindex(".") + 1 :].lower() not in _special_tlds()
    )


def check_address(address: str) -> tuple[str, str]:
    """(address to send to, lowercase key) or ValueError with the reason.

    No DNS: syntax only. Internationalised domains are sent in their ASCII (punycode) form;
    non-ASCII local parts are refused because they need SMTPUTF8, which relays rarely offer.
    Plain addresses are decided by a fast path (~1.5 µs against ~23 µs here: 20 s less at a
    million rows); anything else, and every refusal, is email-validator's.
    """
    address = address.strip()
    if not address:
        raise ValueError("empty email")
    if _surely_valid(address):
        key = address.lower()
        return address, address if key == address else key
    return _check_address_slow(address)


def _check_address_slow(address: str) -> tuple[str, str]:
    """check_address through email-validator alone (`address` trimmed, not empty)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        v = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        # No closing full stop: callers go on with "; skipped" or ". Nothing was…".
        raise ValueError(f"invalid address {address!r}: {str(err).rstrip('.')}") from None
    send_to = address if address.isascii() else str(v.ascii_email)
    key = send_to.lower()
    return send_to, send_to if key == send_to else key  # one string when already lower case


CHUNK = 1 << 20  # bytes read at a time


def _encoding(path: Path) -> tuple[str, list[str]]:
    """The file's encoding, found in a pass over it (C speed, CHUNK at a time, nothing kept):
    as decode() decides for the whole text, with the same warning."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise NewsletterError(f"{path}: no such file. Check the path.") from None
    except IsADirectoryError:
        raise NewsletterError(f"{path}: is a folder; give a CSV file.") from None
    except OSError as err:
        raise NewsletterError(f"{path}: cannot read it ({err.strerror}).") from None
    with f:
        try:
            if f.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                return "utf-16", []
            f.seek(0)
            bad_line = _first_bad_line(f, "utf-8-sig")
            if bad_line is None:
                return "utf-8-sig", []
            f.seek(0)
            if _first_bad_line(f, "cp1252") is None:
                enc, name = "cp1252", "Windows-1252 (cp1252)"
            else:  # bytes cp1252 leaves undefined: Latin-1 maps every byte
                enc, name = "latin-1", "Latin-1"
        except OSError as err:
            raise NewsletterError(f"{path}: cannot read it ({err.strerror}).") from None
    warning = (
        f"{path}:{bad_line}: not UTF-8; read as {name}. Check the accents, or save the file "
        "as UTF-8 (in a spreadsheet: CSV UTF-8)."
    )
    return enc, [warning]


def _first_bad_line(f: BinaryIO, encoding: str) -> int | None:
    """The line of the first byte that `encoding` cannot decode, or None when all of it can."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    while True:
        chunk = f.read(CHUNK)
        held = len(decoder.getstate()[0])  # bytes of a character cut by the last chunk
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            return lines + chunk.count(b"\n", 0, max(0, err.start - held)) + 1
        if not chunk:
            return None
        lines += chunk.count(b"\n")


def _lines(path: Path) -> tuple[Iterator[str], list[str]]:
    """The file's physical lines, each with its ending (LF, CRLF or CR, as the csv module counts
    them), decoded as they are read; and the decoding warnings."""
    encoding, warnings = _encoding(path)

    def lines() -> Iterator[str]:
        try:
            with path.open(encoding=encoding, newline="") as f:
                yield from f
        except UnicodeDecodeError as err:  # only UTF-16 gets here: the rest was checked
            raise NewsletterError(
                f"{path}: starts like UTF-16 but is not ({err.reason}). Save it as CSV UTF-8."
            ) from None
        except OSError as err:
            raise NewsletterError(f"{path}: cannot read it ({err.strerror}).") from None

    return lines(), warnings


def _delimiter(header: str) -> str:
    """The header line's most frequent of , ; TAB outside quotes (`,` when none).

    csv.Sniffer guesses from several data lines and can be fooled by commas inside names;
    a header line rarely holds a delimiter character inside a name, so counting it is exact.
    """
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_rows(path: str | Path) -> tuple[list[str], Iterator[Row], list[str]]:
    """Open a CSV: (normalised columns, the records, warnings). Stops if there is no email column.

    The shared reader for recipient lists and suppression imports.
    """
    path = Path(path)
    # The file is read as it is walked, never whole: a million rows are ~70 MB of text.
    lines, warnings = _lines(path)
    offset = 0  # physical lines before the header: blank ones, and Excel's `sep=;` hint
    delimiter = None
    for line in lines:
        bare = line.rstrip("\r\n")
        if delimiter is None and bare.lower().startswith("sep=") and len(bare) == 5:
            delimiter = bare[4]
        elif bare.strip():
            break
        offset += 1
    else:
        raise NewsletterError(
            f"{path}: no header row. Add one with an 'email' column, then one row per recipient."
        )
    if delimiter is None:
        delimiter = _delimiter(line)
    # skipinitialspace: `a@x.org, "Pérez, Ana"` (hand-typed ", ") is a quoted value, not two.
    reader = csv.reader(
        itertools.chain([line], lines), delimiter=delimiter, skipinitialspace=True, strict=True
    )
    header = _next_record(reader, path, offset + 1)
    header_line = offset + 1
    if header is None:  # only a sep= line
        raise NewsletterError(f"{path}: no header row after the sep= line.")
    raw = [h.strip() for h in header]
    columns = [normalise_column(h) if h else "" for h in raw]

    seen: dict[str, int] = {}
    for i, col in enumerate(columns):
        if not col:
            continue
        if col in seen:
            raise NewsletterError(
                f"{path}:{header_line}: columns {seen[col] + 1} ({raw[seen[col]]!r}) and "
                f"{i + 1} ({raw[i]!r}) both mean {col!r}. Rename or remove one."
            )
        seen[col] = i
    if "email" not in seen:
        found = ", ".join(repr(h) for h in raw) or "none"
        looks_like_data = any("@" in h for h in raw)
        hint_text = (
            " The first line looks like data: add a header row above it."
            if looks_like_data
            else " Name the column of addresses 'email'."
        )
        raise NewsletterError(
            f"{path}:{header_line}: no 'email' column (found {found}; read with delimiter "
            f"{_delimiter_name(delimiter)}).{hint_text}"
        )

    def records() -> Iterator[Row]:
        ignored_column_data = False
        while True:
            start = offset + reader.line_num + 1
            record = _next_record(reader, path, start)
            if record is None:
                break
            if not any(cell.strip() for cell in record):
                continue  # a blank line, or a row of empty cells
            if len(record) > len(columns) and any(c.strip() for c in record[len(columns) :]):
                # Shifted values would put a name in the language column: skip, don't guess.
                yield Row(
                    start,
                    {"email": record[seen["email"]]},
                    f"{len(record)} values but the header has {len(columns)} columns; "
                    f"quote values that contain a {_delimiter_name(delimiter)}",
                )
                continue
            cells: dict[str, str] = {}
            for i, col in enumerate(columns):
                value = record[i] if i < len(record) else ""
                if col:
                    cells[col] = value
                elif value.strip():
                    ignored_column_data = True
            yield Row(start, cells)
        if ignored_column_data:
            warnings.append(f"{path}: values under a column with no header name were ignored.")

    return [c for c in columns if c], records(), warnings


def _delimiter_name(d: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}.get(d, repr(d))


def _next_record(reader: csv.Reader, path: Path, start: int) -> list[str] | None:
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as err:
        why = str(err)
        if "unexpected end of data" in why:
            fix = "a quoted value opened here is never closed; add the closing quote"
        elif "field larger than field limit" in why:
            fix = (
                f"a value here runs past {csv.field_size_limit()} characters; probably a "
                "quote that is never closed"
            )
        else:
            fix = f'malformed quotes ({why}); double a quote inside a quoted value ("")'

        raise NewsletterError(f"{path}:{start}: {fix}.") from None


def read_csv(path: str | Path, default_language: str = "es") -> RecipientReport:
    """Read a recipient CSV: valid recipients in file order; bad rows and duplicates reported.

    The whole list in memory: for previews, test copies and short lists. A send and
    `recipients check` stream the rows into SQLite instead (scan_csv, runlist.RunList).
    """
    report = RecipientReport(path=Path(path))
    first_line: dict[str, int] = {}
    for r in scan_csv(path, default_language, report, share=True):
        if r.key in first_line:
            report.duplicates.append(
                Problem(r.line, r.email, f"duplicate of line {first_line[r.key]}; sent once")
            )
            continue
        first_line[r.key] = r.line
        report.recipients.append(r)
    return report


def scan_csv(
    path: str | Path, default_language: str, report: RecipientReport, *, share: bool = False
) -> Iterator[Recipient]:
    """The valid rows of a recipient CSV, in file order, as they are read (repeated addresses
    included: the caller keeps the first); bad rows go to report.problems, the file's columns
    and warnings to report. NewsletterError (before any row) when the file cannot be a list.

    `share`: rows kept in memory share one string per distinct field value (cities, surnames
    and languages repeat down a list); rows streamed elsewhere need not."""
    if default_language not in LANGUAGES:
        raise NewsletterError(f"default language must be es or en, not {default_language!r}.")
    columns, rows, warnings = read_rows(path)
    report.columns, report.warnings = columns, warnings
    return _valid_rows(rows, default_language, report, {} if share else None)


def _valid_rows(
    rows: Iterator[Row],
    default_language: str,
    report: RecipientReport,
    same: dict[str, str] | None,
) -> Iterator[Recipient]:
    row_type = type("Row", (), {})  # its instances' dicts share one key table (below)
    for row in rows:
        cells = row.cells
        written = clean_text(cells.get("email", ""))
        if row.error:
            report.problems.append(Problem(row.line, written, row.error))
            continue
        try:
            email, key = check_address(written)
        except ValueError as err:
            report.problems.append(Problem(row.line, written, str(err)))
            continue
        language = parse_language(cells.get("language", ""), default_language)
        if language is None:
            # A member whose language we have no edition in still wants the alert: the
            # default edition, and a line so the list can be corrected.
            language = default_language
            report.warnings.append(
                f"{report.path}:{row.line}: language {clean_text(cells['language'])!r} has no "
                f"edition; {email} gets the default ({default_language}). Write es or en there."
            )
        name = clean_text(cells.get("name", ""))
        if not name:
            name = clean_text(f"{cells.get('first_name', '')} {cells.get('last_name', '')}")
        # An instance's dict: every row has the same columns, so Python keeps one key table for
        # all of them (a key-sharing dict, ~110 bytes a row against ~190 for a plain one).
        fields: dict[str, str] = row_type().__dict__
        for col, value in cells.items():
            if col not in ("email", "name", "language"):
                v = clean_text(value)
                fields[col] = v if same is None else same.setdefault(v, v)
        yield Recipient(email, key, name, language, fields, row.line)


def plural(n: int, word: str, many: str = "") -> str:
    """`1 recipient`, `2 recipients` (`many` for irregular plurals)."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def format_report(
    report: RecipientReport, count: int | None = None, by_language: dict[str, int] | None = None
) -> list[str]:
    """The report as lines: a summary, then `FILE:LINE: reason` for each problem, then warnings.
    `count` and `by_language` for a list that is not in report.recipients (runlist.RunList)."""
    if count is None:
        count, by_language = len(report.recipients), report.by_language()
    langs = ", ".join(f"{n} {lang}" for lang, n in (by_language or {}).items())
    summary = (
        f"{report.path}: {plural(count, 'recipient')} ({langs}), "
        f"{plural(len(report.problems), 'bad row')} skipped, "
        f"{plural(len(report.duplicates), 'duplicate')} sent once"
    )
    out = [summary]
    for p in sorted(report.problems + report.duplicates, key=lambda p: p.line):
        out.append(f"{report.path}:{p.line}: {p.reason}")
    out += [f"warning: {w}" for w in report.warnings]
    return out
