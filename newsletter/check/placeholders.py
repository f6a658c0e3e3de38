"""What is not yet the real thing: `[[WRITE: …]]` marks, leftover Jinja, unfilled or unknown
tokens, and example values (RFC 2606 domains, "EXAMPLE:" marks) in the settings, alert.toml and
the editions: warnings (W-EXAMPLE) for a check, errors (E-EXAMPLE) for a real send, where members
would receive them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lxml import etree

from newsletter import render, tokens
from newsletter.check.dom import _describe, _elements, html_links, parse_html
from newsletter.check.problems import Place, Problem, _settings_file, _short
from newsletter.check.sample import sample_values
from newsletter.config import Config
from newsletter.content import WRITE_MARK_RE, Alert, is_example_value
from newsletter.render import Edition

# Every token the code fills; anything else shaped like a token is a typo or a stale template.
KNOWN_TOKENS = frozenset(
    v
    for k, v in vars(tokens).items()
    if k.isupper() and isinstance(v, str) and tokens.TOKEN_RE.fullmatch(v)
)
FIELD_RE = re.compile(r"__NL_FIELD_[A-Z0-9_]+?__")
# Jinja syntax that survived rendering (a template that printed a template, or a raw block).
JINJA_LEFTOVER_RE = re.compile(r"\{\{|\{%|\{#")


def check_placeholders(
    html_root: etree._Element | None, text: str, place: Place, *, filled: bool
) -> list[Problem]:
    """`[[WRITE: …]]` markers, leftover Jinja syntax and tokens: unknown ones, or any once filled."""
    problems: list[Problem] = []
    sources: list[tuple[str, int | None, str]] = []
    if html_root is not None:
        for el in _elements(html_root):
            for piece in (el.text, el.tail, *el.attrib.values()):
                if piece:
                    sources.append(("html", el.sourceline, piece))
    for n, line in enumerate(text.splitlines(), 1):
        sources.append(("text", n, line))
    seen: set[tuple[str, str, str]] = set()

    def add(pid: str, part: str, line: int | None, what: str, message: str, fix: str) -> None:
        if (pid, part, what) not in seen:
            seen.add((pid, part, what))
            problems.append(
                Problem(pid, dataclasses.replace(place, part=part).at(line), message, fix)
            )

    for part, line, s in sources:
        for m in WRITE_MARK_RE.finditer(s):
            add(
                "E-PLACEHOLDER",
                part,
                line,
                m.group(0),
                f'unfinished "{_short(unquote(m.group(0)))}"',  # as written, not %20-encoded
                "write the text the marker asks for in the alert's content",
            )
        for m in list(JINJA_LEFTOVER_RE.finditer(s))[:1]:
            add(
                "E-PLACEHOLDER",
                part,
                line,
                m.group(0),
                f'leftover template syntax "{m.group(0)}" in "{_short(s)}"',
                "close the Jinja tag in the template, or remove the braces",
            )
        for tok in tokens.TOKEN_RE.findall(s):
            if filled:
                add(
                    "E-TOKEN",
                    part,
                    line,
                    tok,
                    f"token {tok} was not filled",
                    "use only the tokens in newsletter/tokens.py (or add the merge field to the CSV)",
                )
            elif tok not in KNOWN_TOKENS and not FIELD_RE.fullmatch(tok):
                add(
                    "E-TOKEN",
                    part,
                    line,
                    tok,
                    f"unknown token {tok}",
                    "use one of " + ", ".join(sorted(KNOWN_TOKENS)),
                )
    return problems


def check_examples(root: etree._Element, place: Place) -> list[Problem]:
    """example.org links: stand-ins for URLs the source lost, to replace before a real send."""
    problems = []
    seen = set()
    for el, url in html_links(root):
        if (
            url not in seen
            and urlsplit(url).scheme in ("https", "http", "mailto")
            and is_example_value(url)
        ):
            seen.add(url)
            value = unquote(url[7:].split("?")[0]) if url.startswith("mailto:") else url
            problems.append(
                Problem(
                    "W-EXAMPLE",
                    place.at(el.sourceline, _describe(el)),
                    f"{_short(value)} is an example value standing in for a fact the source lost",
                    "set the real address in newsletter.toml or the alert's content",
                )
            )
    return problems


def _config_examples(cfg: Config) -> list[tuple[str, str, str]]:
    """(where, key, value) of every [sender]/[org]/[web] setting that holds an example value."""
    found = []
    for section in ("sender", "org", "web"):
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, str) and value and is_example_value(_addr(value)):
                key = f.name.rstrip("_")
                found.append((f"{_settings_file(cfg)} [{section}] {key}", key, _addr(value)))
    return found


def _alert_examples(alert: Alert) -> list[tuple[str, str]]:
    """(where, value) of every link and contact detail of alert.toml that is an example value."""
    toml = alert.path / "alert.toml"
    found = [(f"[links] {k}", v) for k, v in alert.links.items()]
    for cid, c in alert.contacts.items():
        found += [(f"[contacts.{cid}] phone", c.phone), (f"[contacts.{cid}] email", c.email)]
    return [(f"{toml} {key}", value) for key, value in found if value and is_example_value(value)]


def check_config(cfg: Config) -> list[Problem]:
    """Settings that still hold example values."""
    return [
        Problem(
            "W-EXAMPLE",
            where,
            f"{_short(value)} is an example value",
            f"set the real {key.replace('_', ' ')}: a real send stops on it",
        )
        for where, key, value in _config_examples(cfg)
    ]


def check_alert_examples(alert: Alert) -> list[Problem]:
    """Links and contact addresses in alert.toml that are still example values."""
    return [
        Problem(
            "W-EXAMPLE",
            where,
            f"{_short(value)} is an example value standing in for a fact the source lost",
            "write the real value: a real send stops on it",
        )
        for where, value in _alert_examples(alert)
    ]


# A URL, an address or an "EXAMPLE:" mark: the shapes a placeholder takes in what members read.
_VALUE_RE = re.compile(
    r"(?:https?://|mailto:)[^\s\"'<>)\]]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\bEXAMPLE:[^\n<]*"
)


def _example_sources(cfg: Config, alert: Alert) -> list[tuple[str, str]]:
    """(where it is set, value as it shows) of every setting or alert fact still an example."""
    return [(w, v) for w, _, v in _config_examples(cfg)] + _alert_examples(alert)


def _delivered_text(cfg: Config, alert: Alert, lang: str, edition: Edition | None = None) -> str:
    """All a member reads of one edition (`edition` if already rendered): both parts with
    sample links, URLs decoded, and the headers the settings write (From, Reply-To, List-Id,
    List-Unsubscribe's mailto)."""
    if edition is None:
        edition = render.render_edition(cfg, alert, lang, variant="member")
    filled = render.fill_edition(edition, sample_values(cfg, edition))
    root = parse_html(filled.html)
    pieces = [root.text_content(), filled.text]
    for el in _elements(root):
        pieces += list(el.attrib.values())
    s = cfg.sender
    pieces += [s.from_, s.reply_to, s.list_id, s.unsubscribe_mailto]
    return "\n".join(unquote(p) for p in pieces if p)


def delivered_placeholders(
    cfg: Config, alert: Alert, rendered: dict[str, Edition] | None = None
) -> list[Problem]:
    """Every placeholder a member would receive, as an error: what stops a real send.

    A placeholder is a value on an RFC 2606 example domain, an "EXAMPLE:" mark or a
    `[[WRITE: …]]` (the last is an error anyway). Each is reported where it is set when that is
    known (a setting, an alert fact), else in the edition that shows it.
    """
    sources = _example_sources(cfg, alert)
    problems: dict[str, Problem] = {}
    for lang in alert.languages:
        haystack = _delivered_text(cfg, alert, lang, (rendered or {}).get(lang))
        for where, value in sources:
            if value in haystack and where not in problems:
                problems[where] = Problem(
                    "E-EXAMPLE",
                    where,
                    f"{_short(value)} is a placeholder and members would receive it",
                    "set the real value, or send to the outbox, --dry-run or --test until then",
                )
        for m in _VALUE_RE.finditer(haystack):
            value = m.group(0).rstrip(".,;:")
            if not is_example_value(value) or any(v in value or value in v for _, v in sources):
                continue
            where = f"{lang} member copy"
            problems.setdefault(
                f"{where} {value}",
                Problem(
                    "E-EXAMPLE",
                    where,
                    f"{_short(value)} is a placeholder and members would receive it",
                    f"replace it in {alert.path / (lang + '.md')} or the setting that writes it",
                ),
            )
    return list(problems.values())


def _addr(value: str) -> str:
    """The address inside `Name <addr>`, else the value."""
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value


def content_marks(alert_path: Path) -> list[Problem]:
    """`[[WRITE: …]]` markers in the alert's own files, by file and line (where the editor writes)."""
    problems = []
    for path in sorted(p for p in alert_path.rglob("*") if p.is_file()):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(lines, 1):
            for m in WRITE_MARK_RE.finditer(line):
                problems.append(
                    Problem(
                        "E-PLACEHOLDER",
                        f"{path}:{n}",
                        f'unfinished "{_short(m.group(0))}"',
                        "replace the marker with the text it asks for",
                    )
                )
    return problems
