"""An alert folder read into plain data: facts from alert.toml, text per language from <lang>.md.

    alerts/<id>/alert.toml   date, languages (default first), links, events, contacts
    alerts/<id>/es.md        +++ TOML front matter +++ then Markdown; `::: block [id]` lines
    alerts/<id>/en.md        insert typed blocks (forward, language, event, petition, contact…)

An editor writes no HTML: Markdown is rendered without raw HTML, and links to the alert's named
URLs are written `[text](link:petition)`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import textwrap
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from newsletter.config import Config
from newsletter.errors import NewsletterError

ALERT_FILE = "alert.toml"
LANGUAGES = ("es", "en")
ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
WRITE_MARK_RE = re.compile(r"\[\[WRITE:[^\]]*\]\]")
BLOCK_RE = re.compile(r"^:::\s*(\S+)(?:\s+(\S+))?\s*$")
# An event whose alert gives no end (`end` or `duration_minutes`) lasts this long in calendars:
# a zero-length entry shows as nothing in most of them. The email shows only the start.
DEFAULT_EVENT_MINUTES = 60
FRONT_KEYS = ("subject", "preheader", "headline", "subtitle")

# Typed blocks: name -> does it take an id (None: no; "event"/"contact"/"link": which table).
BLOCKS: dict[str, str | None] = {
    "forward-link": None,  # "Forward this link", at the top
    "language": None,  # "Get emails in English" / "Reciba los correos en español"
    "event": "event",
    "petition": "link",  # call-to-action button; id = a link name, default "petition"
    "contact": "contact",
    "forward-friend": None,  # "Forward this message to a friend", near the end
}

# RFC 2606 names: a value on them is a placeholder an editor must replace, never a real fact.
_EXAMPLE_RE = re.compile(
    r"(?i)(^\s*EXAMPLE:|[@./]example\.(?:org|com|net)\b|//example\.(?:org|com|net)\b|\.example\b)"
)


def is_example_value(s: str) -> bool:
    """True for an RFC 2606 placeholder (https://example.org/…, …@example.org, "EXAMPLE: …")."""
    return bool(_EXAMPLE_RE.search(s or ""))


@dataclass(frozen=True)
class Event:
    id: str
    start: dt.datetime | None  # aware; None while the editor has not written it yet
    start_text: str  # the raw value when `start` is still a [[WRITE: …]] marker
    timezone: str
    place: str
    address: str
    end: dt.datetime | None = None  # aware; start + DEFAULT_EVENT_MINUTES unless given
    end_stated: bool = False  # False: the end is the default length (the alert gave none)


@dataclass(frozen=True)
class Contact:
    id: str
    name: str
    phone: str = ""
    email: str = ""

    @property
    def tel(self) -> str:
        """A tel: URI (RFC 3966); ten digits count as a North American number."""
        digits = re.sub(r"\D", "", self.phone)
        if not digits:
            return ""
        if self.phone.strip().startswith("+"):
            return f"tel:+{digits}"
        if len(digits) == 10:
            return f"tel:+1{digits}"
        return f"tel:{digits}"


@dataclass(frozen=True)
class Part:
    """A piece of the body: Markdown (html + text) or a typed block."""

    kind: str  # "markdown" or "block"
    html: Markup = Markup("")
    text: str = ""
    block: str = ""
    ref: str = ""
    line: int = 0
    links: tuple[str, ...] = ()  # the [links] names a Markdown part uses, in order
    images: tuple[ImageUse, ...] = ()  # the images a Markdown part shows


@dataclass(frozen=True)
class Image:
    """An image fact of alert.toml: `[images.<name>] url, width[, height]` (pixels of the file)."""

    name: str
    url: str
    width: int
    height: int = 0


@dataclass(frozen=True)
class ImageUse:
    """One Markdown image as written: where, its source, its alt text, and its known width."""

    line: int
    src: str
    alt: str
    width: int  # the file's width in pixels; 0 when unknown (a bare URL)


@dataclass(frozen=True)
class Text:
    """One language's words: front matter and body parts."""

    lang: str
    path: Path
    subject: str
    preheader: str
    headline: str
    subtitle: str
    events: dict[str, dict[str, str]]  # event id -> {"title": …, "detail": …}
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Alert:
    id: str
    path: Path
    date: dt.date
    languages: tuple[str, ...]  # default first
    links: dict[str, str]
    events: dict[str, Event]
    contacts: dict[str, Contact]
    texts: dict[str, Text] = field(default_factory=dict)
    copyright: str = ""  # the alert's own footer line; empty: [org] copyright or "© year org"
    images: dict[str, Image] = field(default_factory=dict)

    @property
    def default_language(self) -> str:
        return self.languages[0]


# --- reading ----------------------------------------------------------------------------------


def _toml(path: Path, text: str, line_offset: int = 0) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"line (\d+)", msg)
        line = int(m.group(1)) + line_offset if m else line_offset + 1
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
        raise NewsletterError(f"{path}:{line}: {reason}. Fix the TOML syntax.") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NewsletterError(
            f"{path}: missing. Every alert needs it (see `newsletter new`)."
        ) from None
    except UnicodeDecodeError:
        raise NewsletterError(f"{path}: not UTF-8 text. Save it as UTF-8.") from None


def _line_of(source: str, key: str) -> int:
    """The line a TOML key or table header stands on (1-based; 1 when not found)."""
    for i, line in enumerate(source.splitlines(), 1):
        if re.match(rf"\s*(\[+\s*)?{re.escape(key)}\b", line):
            return i
    return 1


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise NewsletterError(f"{where}: expected a text in quotes, got {value!r}.")
    return value


def load_alert(cfg: Config, path: str | Path) -> Alert:
    """Read an alert folder (or its alert.toml) into an Alert with every language's text."""
    folder = Path(path)
    if folder.name == ALERT_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise NewsletterError(f"{folder}: no such alert folder. Give the path to alerts/<id>/.")
    toml_path = folder / ALERT_FILE
    source = _read(toml_path)
    data = _toml(toml_path, source)

    def where(key: str) -> str:
        return f"{toml_path}:{_line_of(source, key)}"

    _refuse_unknown(
        data,
        ("date", "languages", "copyright", "links", "images", "events", "contacts"),
        where,
        f"{ALERT_FILE} holds date, languages, copyright, [links], [images.<name>], "
        "[events.<id>], [contacts.<id>]",
    )
    alert_id = folder.resolve().name
    if not ID_RE.match(alert_id):
        raise NewsletterError(
            f"{folder}: the folder name is the alert id and may hold only lowercase letters, "
            "digits and hyphens. Rename it."
        )
    date = data.get("date")
    if isinstance(date, dt.datetime):
        date = date.date()
    if not isinstance(date, dt.date):
        raise NewsletterError(f"{where('date')}: date = YYYY-MM-DD (no quotes) is required.")
    languages = data.get("languages", list(LANGUAGES))
    if (
        not isinstance(languages, list)
        or not languages
        or any(lang not in LANGUAGES for lang in languages)
        or len(set(languages)) != len(languages)
    ):
        raise NewsletterError(
            f"{where('languages')}: languages must list some of {', '.join(LANGUAGES)}, "
            'default first, e.g. languages = ["es", "en"].'
        )
    links = data.get("links", {})
    if not isinstance(links, dict):
        raise NewsletterError(f'{where("links")}: [links] must be a table of name = "URL".')
    links = {k: _str(v, where(k)) for k, v in links.items()}

    events = {}
    for eid, ev in _table(data, "events", where).items():
        events[eid] = _event(eid, ev, where)
    contacts = {}
    for cid, c in _table(data, "contacts", where).items():
        if not isinstance(c, dict) or "name" not in c:
            raise NewsletterError(f'{where(f"contacts.{cid}")}: [contacts.{cid}] needs name = "…".')
        unknown = set(c) - {"name", "phone", "email"}
        if unknown:
            raise NewsletterError(
                f"{where(f'contacts.{cid}')}: unknown key {sorted(unknown)[0]!r} in "
                f"[contacts.{cid}]; use name, phone, email."
            )
        contacts[cid] = Contact(
            cid, *(_str(c.get(k, ""), where(f"contacts.{cid}")) for k in ("name", "phone", "email"))
        )
    images = {
        name: _image(name, im, where(f"images.{name}"))
        for name, im in _table(data, "images", where).items()
    }
    copyright_line = _str(data.get("copyright", ""), where("copyright"))
    alert = Alert(
        alert_id,
        folder,
        date,
        tuple(languages),
        links,
        events,
        contacts,
        {},
        copyright_line,
        images,
    )
    return replace(alert, texts={lang: _load_text(alert, lang) for lang in alert.languages})


def _image(name: str, im: Any, w: str) -> Image:
    if not isinstance(im, dict) or "url" not in im or "width" not in im:
        raise NewsletterError(
            f'{w}: [images.{name}] needs url = "https://…" and width = <pixels of the file>.'
        )
    _refuse_unknown(
        im, ("url", "width", "height"), lambda _k: w, f"[images.{name}] takes url, width, height"
    )
    sizes = [im["width"], im.get("height", 1)]
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in sizes):
        raise NewsletterError(
            f"{w}: [images.{name}] width and height are whole numbers of pixels above 0."
        )
    return Image(name, _str(im["url"], w), im["width"], im.get("height", 0))


def _refuse_unknown(table: dict[str, Any], known: tuple[str, ...], where: Any, holds: str) -> None:
    """One clear line for a key the table does not take (a typo would be silently ignored)."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise NewsletterError(f"{where(unknown[0])}: unknown key {unknown[0]!r}; {holds}.")


def _table(data: dict[str, Any], name: str, where: Any) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise NewsletterError(f"{where(name)}: [{name}.<id>] tables expected.")
    return value


def _event(eid: str, ev: Any, where: Any) -> Event:
    w = where(f"events.{eid}")
    if not isinstance(ev, dict):
        raise NewsletterError(f"{w}: [events.{eid}] must be a table.")
    for key in ("start", "timezone", "place", "address"):
        if key not in ev:
            raise NewsletterError(f"{w}: [events.{eid}] needs {key} = ….")
    _refuse_unknown(
        ev,
        ("start", "end", "duration_minutes", "timezone", "place", "address"),
        lambda _key: w,
        f"[events.{eid}] takes start, end or duration_minutes, timezone, place, address",
    )
    if "end" in ev and "duration_minutes" in ev:
        raise NewsletterError(f"{w}: [events.{eid}] has both end and duration_minutes; keep one.")
    tzname = _str(ev["timezone"], w)
    try:
        tz = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise NewsletterError(
            f"{w}: [events.{eid}] timezone {tzname!r} is unknown; use an IANA name such as "
            '"America/Chicago".'
        ) from None
    start = ev["start"]
    start_text = ""
    if isinstance(start, str) and WRITE_MARK_RE.search(start):
        start_text, start = start, None
    elif isinstance(start, dt.datetime):
        # A local time (no offset) means the event's timezone; an offset is honoured as written.
        start = start.replace(tzinfo=tz) if start.tzinfo is None else start.astimezone(tz)
    else:
        raise NewsletterError(
            f"{w}: [events.{eid}] start must be a local date and time without quotes, e.g. "
            "start = 2011-08-16T11:00:00."
        )
    end, stated = _event_end(eid, ev, start, tz, w)
    return Event(
        eid, start, start_text, tzname, _str(ev["place"], w), _str(ev["address"], w), end, stated
    )


def _event_end(
    eid: str, ev: dict[str, Any], start: dt.datetime | None, tz: ZoneInfo, w: str
) -> tuple[dt.datetime | None, bool]:
    """(end, whether the alert stated it): `end`, else start + `duration_minutes`, else the
    default length (DEFAULT_EVENT_MINUTES)."""
    if start is None:
        return None, False
    if "end" in ev:
        end = ev["end"]
        if not isinstance(end, dt.datetime):
            raise NewsletterError(
                f"{w}: [events.{eid}] end must be a local date and time without quotes, e.g. "
                "end = 2011-08-16T13:00:00."
            )
        end = end.replace(tzinfo=tz) if end.tzinfo is None else end.astimezone(tz)
        if end <= start:
            raise NewsletterError(f"{w}: [events.{eid}] end must come after start.")
        return end, True
    if "duration_minutes" in ev:
        minutes = ev["duration_minutes"]
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise NewsletterError(
                f"{w}: [events.{eid}] duration_minutes must be a whole number above 0, e.g. 90."
            )
        return start + dt.timedelta(minutes=minutes), True
    return start + dt.timedelta(minutes=DEFAULT_EVENT_MINUTES), False


def _split_front_matter(path: Path, source: str) -> tuple[str, str, int]:
    """(front matter TOML, body, line number where the body starts)."""
    lines = source.splitlines(keepends=True)
    if not lines or lines[0].strip() != "+++":
        raise NewsletterError(
            f"{path}:1: the file must start with a +++ line, then the front matter "
            "(subject, preheader, headline, subtitle), then another +++ line."
        )
    for i, line in enumerate(lines[1:], 1):
        if line.strip() == "+++":
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 2
    raise NewsletterError(f"{path}:1: the front matter has no closing +++ line. Add one.")


def _load_text(alert: Alert, lang: str) -> Text:
    path = alert.path / f"{lang}.md"
    source = _read(path)
    front, body, body_line = _split_front_matter(path, source)
    meta = _toml(path, front, line_offset=1)

    def where(key: str) -> str:
        return f"{path}:{1 + _line_of(front, key)}"

    for key in FRONT_KEYS:
        if key not in meta:
            raise NewsletterError(f'{path}:1: front matter lacks {key} = "…". Add it.')
        _str(meta[key], where(key))
    unknown = set(meta) - set(FRONT_KEYS) - {"events"}
    if unknown:
        key = sorted(unknown)[0]
        raise NewsletterError(
            f"{where(key)}: unknown front matter key {key!r}; use "
            f"{', '.join(FRONT_KEYS)} and [events.<id>] title/detail."
        )
    events: dict[str, dict[str, str]] = {}
    for eid, ev in _table(meta, "events", where).items():
        w = where(f"events.{eid}")
        if eid not in alert.events:
            raise NewsletterError(
                f"{w}: [events.{eid}] is not an event of {ALERT_FILE}. Fix the id."
            )
        if not isinstance(ev, dict) or "title" not in ev:
            raise NewsletterError(f'{w}: [events.{eid}] needs title = "…".')
        events[eid] = {"title": _str(ev["title"], w), "detail": _str(ev.get("detail", ""), w)}
    for eid in alert.events:
        if eid not in events:
            raise NewsletterError(
                f'{path}:1: front matter lacks [events.{eid}] title = "…". Add it.'
            )
    parts = tuple(_parse_body(alert, path, body, body_line))
    return Text(
        lang,
        path,
        meta["subject"],
        meta["preheader"],
        meta["headline"],
        meta["subtitle"],
        events,
        parts,
    )


# --- the body: Markdown and typed blocks ------------------------------------------------------

_MD = MarkdownIt("commonmark", {"html": False, "typographer": False})


def _parse_body(alert: Alert, path: Path, body: str, first_line: int) -> list[Part]:
    parts: list[Part] = []
    chunk: list[str] = []
    chunk_line = first_line

    def flush() -> None:
        src = "".join(chunk)
        if src.strip():
            parts.append(_markdown(alert, path, src, chunk_line))

    for i, line in enumerate(body.splitlines(keepends=True)):
        lineno = first_line + i
        if not line.startswith(":::"):
            chunk.append(line)
            continue
        flush()
        chunk, chunk_line = [], lineno + 1
        m = BLOCK_RE.match(line.strip())
        name, ref = (m.group(1), m.group(2) or "") if m else ("", "")
        if name not in BLOCKS:
            raise NewsletterError(
                f"{path}:{lineno}: unknown block {line.strip()!r}. Known blocks: "
                f"{', '.join('::: ' + b + (' <id>' if BLOCKS[b] else '') for b in BLOCKS)}."
            )
        kind = BLOCKS[name]
        if kind == "link":
            ref = ref or "petition"
            if ref not in alert.links:
                raise NewsletterError(
                    f"{path}:{lineno}: ::: {name} needs a link {ref!r} under [links] in "
                    f"{ALERT_FILE}. Add it."
                )
        elif kind is not None:
            table = alert.events if kind == "event" else alert.contacts
            if ref not in table:
                known = ", ".join(table) or "none yet"
                raise NewsletterError(
                    f"{path}:{lineno}: ::: {name} {ref or '<id>'}: name one of the "
                    f"[{kind}s.<id>] tables of {ALERT_FILE} (known: {known})."
                )
        elif ref:
            raise NewsletterError(f"{path}:{lineno}: ::: {name} takes no id. Remove {ref!r}.")
        parts.append(Part("block", block=name, ref=ref, line=lineno))
    flush()
    return parts


# Inside the 600 px container, the content cell has 32 px of padding a side.
COLUMN_WIDTH = 536
# An image may never push the layout wider than the screen; display:block drops the gap below.
IMAGE_STYLE = "display:block;max-width:100%;height:auto;border:0;outline:none;text-decoration:none"


def _markdown(alert: Alert, path: Path, src: str, first_line: int) -> Part:
    tokens = _MD.parse(src)
    names: list[str] = []
    images: list[ImageUse] = []
    for tok in tokens:
        if tok.type != "inline" or not tok.children:
            continue
        line = first_line + (tok.map[0] if tok.map else 0)
        for child in tok.children:
            if child.type == "image":
                images.append(_email_image(alert, path, line, child))
            elif child.type == "link_open":
                href = str(child.attrs.get("href", ""))
                if href.startswith("link:"):
                    name = href[5:]
                    child.attrs["href"] = _named(
                        alert.links,
                        name,
                        f"{path}:{line}: [..](link:{name}) names no link",
                        f'{name} = "https://…" under [links]',
                    )
                    names.append(name)
    html = _MD.renderer.render(tokens, _MD.options, {})
    return Part(
        "markdown",
        html=Markup(html),
        text=markdown_text(tokens),
        line=first_line,
        links=tuple(names),
        images=tuple(images),
    )


def _named(table: dict[str, Any], name: str, what: str, add: str) -> Any:
    """table[name], or one clear line saying what to add to alert.toml."""
    if name not in table:
        known = ", ".join(table) or "none"
        raise NewsletterError(f"{what}; add {add} in {ALERT_FILE} (known: {known}).")
    return table[name]


def _email_image(alert: Alert, path: Path, line: int, tok: Token) -> ImageUse:
    """`![alt](image:name)` or `![alt](https://…)` made email-safe: a width attribute within the
    column (Outlook sizes by it), max-width:100% and height:auto (phones scale it down)."""
    src = str(tok.attrs.get("src", ""))
    width = 0
    if src.startswith("image:"):
        name = src[6:]
        image = _named(
            alert.images,
            name,
            f"{path}:{line}: ![..](image:{name}) names no image",
            f'[images.{name}] with url = "https://…" and width = <pixels>',
        )
        src, width = image.url, image.width
        tok.attrs["src"] = src
    shown = min(width, COLUMN_WIDTH) if width else COLUMN_WIDTH
    tok.attrs["width"] = str(shown)
    tok.attrs["style"] = IMAGE_STYLE
    alt = "".join(c.content for c in tok.children or [] if c.type in ("text", "code_inline"))
    return ImageUse(line, src, alt.strip(), width)


def _inline_text(children: list[Token]) -> str:
    out: list[str] = []
    hrefs: list[str] = []
    starts: list[int] = []
    for t in children:
        if t.type in ("text", "code_inline"):
            out.append(t.content)
        elif t.type == "softbreak":
            out.append(" ")
        elif t.type == "hardbreak":
            out.append("\n")
        elif t.type == "link_open":
            hrefs.append(str(t.attrs.get("href", "")))
            starts.append(len(out))
        elif t.type == "link_close":
            href = hrefs.pop()
            label = "".join(out[starts.pop() :])
            # Links as URLs: the reader of the text part needs the address itself.
            if href != label and href.removeprefix("mailto:") != label:
                out.append(f" <{href}>")
        elif t.type == "image":
            out.append(t.content)
    return "".join(out)


def markdown_text(tokens: list[Token], width: int = 72) -> str:
    """Plain text of parsed Markdown: headings, paragraphs, lists, links as <URL>."""
    blocks: list[str] = []
    prefix: list[str] = []
    list_stack: list[list[int]] = []  # [ordered?, counter]
    heading = ""
    for t in tokens:
        if t.type == "heading_open":
            heading = t.tag
        elif t.type in ("bullet_list_open", "ordered_list_open"):
            list_stack.append([t.type == "ordered_list_open", int(t.attrs.get("start", 1) or 1)])
        elif t.type in ("bullet_list_close", "ordered_list_close"):
            list_stack.pop()
        elif t.type == "blockquote_open":
            prefix.append("> ")
        elif t.type == "blockquote_close":
            prefix.pop()
        elif t.type == "hr":
            blocks.append("-" * 20)
        elif t.type in ("fence", "code_block"):
            blocks.append(t.content.rstrip("\n"))
        elif t.type == "inline":
            text = _inline_text(t.children or [])
            lead = "".join(prefix)
            bullet = ""
            if list_stack and not heading:
                ordered, n = list_stack[-1]
                bullet = f"{n}. " if ordered else "- "
                list_stack[-1][1] = n + 1
            if heading:
                line = text.upper() if heading == "h1" else text
                under = "=" if heading in ("h1", "h2") else "-"
                blocks.append(f"{line}\n{under * min(len(line), width)}")
                heading = ""
                continue
            lines = []
            for para in text.split("\n"):
                lines.append(
                    textwrap.fill(
                        para,
                        width=width,
                        initial_indent=lead + bullet,
                        subsequent_indent=lead + " " * len(bullet),
                        break_long_words=False,
                        break_on_hyphens=False,
                    )
                )
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- newsletter new ---------------------------------------------------------------------------

NEW_ALERT_TOML = """\
# The facts of this alert, the same in every language. Text lives in es.md and en.md.
date = {date}
# Editions, default language first.
languages = ["es", "en"]

# Named links (https://…); the text refers to them as [words](link:name).
[links]
petition = "[[WRITE: https://… address of the petition page]]"
press-release = "[[WRITE: https://… address of the press release]]"

# One table per event; `::: event <id>` shows it. Local times. Add `end = …` (same form as
# start) or `duration_minutes = …` when you know it; without either, calendars get {minutes}
# minutes (the email shows only the start).
[events.main]
start = "[[WRITE: date and time as {date}T18:00:00, without quotes]]"
timezone = "America/Chicago"
place = "[[WRITE: place name]]"
address = "[[WRITE: street address, city, state]]"

# People to contact; `::: contact <id>` shows one.
[contacts.main]
name = "[[WRITE: contact name]]"
phone = "[[WRITE: phone number]]"
email = "[[WRITE: contact email address]]"
"""

NEW_TEXT = {
    "es": """\
+++
subject = "[[WRITE: asunto del correo]]"
preheader = "[[WRITE: una frase que resume la alerta]]"
headline = "[[WRITE: titular]]"
subtitle = "[[WRITE: subtítulo]]"

[events.main]
title = "[[WRITE: nombre del evento]]"
detail = "[[WRITE: qué pasará, en una frase]]"
+++
::: forward-link
::: language

[[WRITE: Ciudad, estado – el primer párrafo: qué pasó y por qué importa.]]

[[WRITE: más párrafos.]] Para leer el comunicado completo, [haga clic aquí](link:press-release).

## [[WRITE: ¡Actúe ahora!]]

[[WRITE: qué pedimos que hagan.]]

::: event main
::: contact main
::: petition

::: forward-friend
""",
    "en": """\
+++
subject = "[[WRITE: email subject]]"
preheader = "[[WRITE: one sentence that sums up the alert]]"
headline = "[[WRITE: headline]]"
subtitle = "[[WRITE: subtitle]]"

[events.main]
title = "[[WRITE: event name]]"
detail = "[[WRITE: what will happen, in one sentence]]"
+++
::: forward-link
::: language

[[WRITE: City, ST – the first paragraph: what happened and why it matters.]]

[[WRITE: more paragraphs.]] To read the full press release, [click here](link:press-release).

## [[WRITE: Take Action NOW!]]

[[WRITE: what we ask readers to do.]]

::: event main
::: contact main
::: petition

::: forward-friend
""",
}


def current_umask() -> int:
    """The process's umask (Linux reads it without changing it; elsewhere set and restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: str | bytes, *, private: bool = False) -> None:
    """Write a file via a temporary file in the same folder and a rename: never half-written.

    Its mode is what a plain open() gives (0666 less the umask: the web server or a colleague
    may read a build); `private` keeps it the owner's alone (0600), as for a list export.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if not private:  # mkstemp makes it 0600
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


ID_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:-|$)")


def date_of_id(alert_id: str) -> dt.date | None:
    """The date an id starts with (2026-12-04-dream-act -> 2026-12-04), or None."""
    m = ID_DATE_RE.match(alert_id)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        raise NewsletterError(
            f"alert id {alert_id!r} starts with {m[0].rstrip('-')}, which is not a date. "
            "Fix the id (YYYY-MM-DD-words)."
        ) from None


def run_new(
    cfg: Config,
    alert_id: str,
    *,
    date: dt.date | None = None,
    today: dt.date | None = None,
) -> Path:
    """Create alerts/<alert_id>/ with every block in both languages, marked [[WRITE: …]].

    The alert's date: `date` (--date), else the one the id starts with, else today.
    """
    import click

    if not ID_RE.match(alert_id):
        raise NewsletterError(
            f"alert id {alert_id!r}: use lowercase letters, digits and hyphens, e.g. "
            "2026-12-04-dream-act."
        )
    from_id = date_of_id(alert_id)
    if date is not None and from_id is not None and date != from_id:
        raise NewsletterError(
            f"--date {date} differs from the date the id starts with ({from_id}). Keep one."
        )
    day = date or from_id or today or dt.date.today()
    folder = cfg.path("alerts") / alert_id
    if folder.exists():
        raise NewsletterError(f"{folder}: already exists. Pick another id or edit that alert.")
    # Build in a hidden sibling, then rename: a crash leaves no half-made alert behind.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alert_id}.", dir=folder.parent))
    try:
        (tmp / ALERT_FILE).write_text(
            NEW_ALERT_TOML.format(date=day.isoformat(), minutes=DEFAULT_EVENT_MINUTES),
            encoding="utf-8",
        )
        for lang, text in NEW_TEXT.items():
            (tmp / f"{lang}.md").write_text(text, encoding="utf-8")
        tmp.rename(folder)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    click.echo(f"Created {folder}/ ({ALERT_FILE}, es.md, en.md).")
    click.echo("Replace every [[WRITE: …]], then run:")
    click.echo(f"  newsletter check {folder}")
    return folder
