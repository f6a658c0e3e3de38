"""Render an alert's editions: Jinja per language and variant, premailer once, a real text part.

Which blocks appear is decided here, from the settings, because a token cannot be hidden later:

    block              member                     forward                archive
    greeting (NAME)    yes                        no (FORWARD_INTRO/NOTE) no
    forward links      yes (web page or mailto)   no                     no
    language link      base_url or language_mailto, and a second language   no       no
    unsubscribe        yes (web page, else [sender] unsubscribe_mailto; with neither the
                       token fills empty and `check` reports E-UNSUB)
    view in browser    base_url (VIEW_URL token)  base_url (archive URL)  no
    subscribe invite   no                         yes                    yes
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from babel import Locale
from babel.dates import format_date, format_time, get_timezone_name

from newsletter import i18n, links, resources, tokens
from newsletter.config import Config
from newsletter.content import (
    COLUMN_WIDTH,
    IMAGE_STYLE,
    Alert,
    Event,
    Part,
    Text,
    is_example_value,
    load_alert,
    write_atomic,
)
from newsletter.edition import Edition  # render.Edition: part of this module's API
from newsletter.errors import NewsletterError

VARIANTS = ("member", "forward", "archive")
LAYOUT_HTML = "layout.html"
LAYOUT_TEXT = "layout.txt"
TOP_BLOCKS = ("forward-link", "language")
DATE_FORMAT = {"es": "EEEE d 'de' MMMM 'de' y", "en": "EEEE, MMMM d, y"}
TIME_FORMAT = "h:mm a"
LOGO_UNKNOWN_WIDTH = 200  # a logo whose width is not set (`check` reports it) is drawn this wide
FORWARD_BODY_MAX = 1500  # characters of text in a mailto: forward; mail clients cut long URLs


@dataclass(frozen=True)
class EventView:
    """An event as the templates show it, in one language."""

    id: str
    title: str
    detail: str
    when: str
    place: str
    address: str
    map_url: str
    calendar_url: str
    ics_url: str


# --- events and calendars ---------------------------------------------------------------------


def _utc(d: dt.datetime) -> str:
    return d.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def event_view(cfg: Config, alert: Alert, event: Event, lang: str) -> EventView:
    """Localised date and time, map and calendar links of one event."""
    words = alert.texts[lang].events[event.id]
    gettext = i18n.translations(cfg, lang).gettext
    when = event.start_text
    calendar_url = ics_url = ""
    if event.start is not None:
        when = gettext(i18n.EMAIL_STRINGS["when"]) % {
            "date": format_date(event.start, DATE_FORMAT[lang], locale=lang),
            "time": format_time(event.start, TIME_FORMAT, tzinfo=event.start.tzinfo, locale=lang)
            + f" ({zone_name(cfg, event.start, lang)})",
        }
        calendar_url = "https://calendar.google.com/calendar/render?" + urlencode(
            {
                "action": "TEMPLATE",
                "text": words["title"],
                "details": words["detail"],
                "location": f"{event.place}, {event.address}",
                # Last: a URL that ends in "." (a sentence) loses it to link detection in text.
                "dates": f"{_utc(event.start)}/{_utc(event.end or event.start)}",
            },
            safe="/",
            quote_via=quote,
        )
        base = links.base_url(cfg)
        if base:
            ics_url = f"{base}/a/{quote(alert.id)}/{quote(event.id)}.ics"
    has_address = event.address and "[[WRITE:" not in event.address
    map_url = (
        "https://www.google.com/maps/search/?api=1&query=" + quote(event.address, safe="")
        if has_address
        else ""
    )
    return EventView(
        event.id,
        words["title"],
        words["detail"],
        when,
        event.place,
        event.address,
        map_url,
        calendar_url,
        ics_url,
    )


def zone_name(cfg: Config, start: dt.datetime, lang: str) -> str:
    """The event's time zone as readers say it: the catalog's word for the English generic name
    ("Central Time" -> "hora del centro"), else Babel's ("hora central")."""
    english = get_timezone_name(start.tzinfo, "long", locale="en", zone_variant="generic")
    msg = i18n.catalog(cfg, lang).get(english)
    if msg is not None and isinstance(msg.string, str) and msg.string and not msg.fuzzy:
        return msg.string
    return get_timezone_name(start.tzinfo, "long", locale=lang, zone_variant="generic")


def _ics_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _fold(line: str) -> str:
    """RFC 5545 3.1: lines of at most 75 octets, continued with CRLF + space."""
    out, cur = [], b""
    for ch in line:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > (75 if not out else 74):
            out.append(cur.decode("utf-8"))
            cur = b""
        cur += b
    out.append(cur.decode("utf-8"))
    return "\r\n ".join(out)


def event_ics(cfg: Config, alert: Alert, event_id: str) -> str:
    """An RFC 5545 calendar with the event, written by hand (see docs/architecture.md: why)."""
    event = alert.events[event_id]
    if event.start is None:
        raise NewsletterError(
            f"{alert.path}/alert.toml: [events.{event_id}] start is not written yet."
        )
    # One file serves both editions: the title in each language, default first.
    titles = [alert.texts[lang].events[event_id]["title"] for lang in alert.languages]
    details = [alert.texts[lang].events[event_id]["detail"] for lang in alert.languages]
    domain = cfg.sender.from_.rsplit("@", 1)[-1].strip("> ") or "newsletter.invalid"
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:-//{cfg.org.name}//newsletter//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{alert.id}-{event_id}@{domain}",
        # The alert's date, not the build time: rebuilding gives the same bytes.
        f"DTSTAMP:{alert.date.strftime('%Y%m%d')}T000000Z",
        # UTC times: no VTIMEZONE block needed. The end: the alert's, else the default length.
        f"DTSTART:{_utc(event.start)}",
        f"DTEND:{_utc(event.end or event.start)}",
        f"SUMMARY:{_ics_text(' / '.join(dict.fromkeys(titles)))}",
        f"DESCRIPTION:{_ics_text(chr(10).join(dict.fromkeys(d for d in details if d)))}",
        f"LOCATION:{_ics_text(f'{event.place}, {event.address}')}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(_fold(line) + "\r\n" for line in lines)


# --- rendering --------------------------------------------------------------------------------


def _language_name(lang: str, in_lang: str) -> str:
    return Locale.parse(in_lang).languages.get(lang, lang)


def _visibility(cfg: Config, alert: Alert, lang: str, variant: str) -> dict[str, Any]:
    base = links.base_url(cfg)
    others = [x for x in alert.languages if x != lang]
    member = variant == "member"
    subscribe_url = cfg.org.subscribe_url
    if not subscribe_url and base and not member:
        # The sign-up page of `newsletter serve`, in this edition's language; src says where
        # the new subscriber came from (kept with their consent).
        subscribe_url = f"{base}/s?lang={lang}&src={variant}"
    if not subscribe_url:
        address = cfg.sender.reply_to or cfg.sender.from_
        address = address.rsplit("<", 1)[-1].rstrip(">").strip()
        subject = i18n.translations(cfg, lang).gettext(i18n.EMAIL_STRINGS["subscribe_subject"])
        subscribe_url = links.mailto(address, subject % {"org": cfg.org.name})
    if member:
        view_url = tokens.VIEW_URL if base else ""
    else:
        view_url = links.archive_url(cfg, alert.id, lang) if variant == "forward" else ""
    language = bool(member and others and (base or cfg.sender.language_mailto))
    return {
        "greeting": member,
        "forward": member,
        # Without the forward page the link is a long prefilled mailto: (fine behind a link in
        # the HTML); the text part says to use Forward instead of printing it.
        "forward_mailto": member and not base,
        "language": language,
        "other_lang": others[0] if others else "",
        # Written in the language it offers, for the reader who needs it: that language's catalog.
        "language_label": (
            i18n.translations(cfg, others[0]).gettext(i18n.EMAIL_STRINGS["language_label"])
            if others
            else ""
        ),
        "unsubscribe": member,
        "view_url": view_url,
        "subscribe_url": "" if member else subscribe_url,
        "forward_intro": variant == "forward",
    }


def _lead(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """The top links (forward, language) written before any text: they go above the headline."""
    n = 0
    while n < len(parts) and parts[n].kind == "block" and parts[n].block in TOP_BLOCKS:
        n += 1
    return parts[:n]


def _context(cfg: Config, alert: Alert, lang: str, variant: str) -> dict[str, Any]:
    text: Text = alert.texts[lang]
    lead = _lead(text.parts)
    return {
        "lang": lang,
        "variant": variant,
        "alert": alert,
        "t": text,
        "lead_parts": lead,
        "body_parts": text.parts[len(lead) :],
        "events": {e.id: event_view(cfg, alert, e, lang) for e in alert.events.values()},
        "contacts": alert.contacts,
        "links": alert.links,
        "show": _visibility(cfg, alert, lang, variant),
        "org": cfg.org,
        "logo_width": min(cfg.org.logo_width or LOGO_UNKNOWN_WIDTH, COLUMN_WIDTH),
        "image_style": IMAGE_STYLE,
        "copyright": alert.copyright or cfg.org.copyright or f"© {alert.date.year} {cfg.org.name}",
        "postal_address": cfg.sender.postal_address,
        "tokens": tokens,
    }


def _render(env: jinja2.Environment, name: str, ctx: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(ctx)
    except jinja2.TemplateSyntaxError as err:
        raise NewsletterError(
            f"{err.filename or err.name}:{err.lineno}: {err.message}. {_fix(env, err.filename)}"
        ) from None
    except jinja2.TemplateNotFound as err:
        where = " or ".join(env.loader.searchpath)  # type: ignore[union-attr]
        raise NewsletterError(
            f"{err.name}: template missing (looked in {where}). Fix the name where it is "
            "included, or add the file to the site's templates/email/."
        ) from None
    except jinja2.UndefinedError as err:
        place = _template_place(env, err) or f"templates/email/{name}"
        raise NewsletterError(f"{place}: {err.message}. {_fix(env, place)}") from None
    except NewsletterError:
        raise
    except Exception as err:
        # Any other runtime error raised in a template ({{ "a" + 1 }}, a bad filter argument):
        # one clear line at the template's line, not a traceback.
        place = _template_place(env, err)
        if not place:
            raise
        raise NewsletterError(f"{place}: {type(err).__name__}: {err}. {_fix(env, place)}") from None


def _fix(env: jinja2.Environment, place: str | None) -> str:
    """The fix for an error in a template: a site's copy of a packaged one may predate an upgrade."""
    twin = resources.overridden(env.loader.searchpath, (place or "").rsplit(":", 1)[0])  # type: ignore[union-attr]
    if twin is None:
        return "Fix the template."
    return (
        f"Fix the template: the site's copy of {twin}, which may have changed since it was "
        "copied (compare them), or delete the copy to use the packaged one."
    )


def _template_place(env: jinja2.Environment, err: BaseException) -> str:
    """The innermost template frame as "file:line" (Jinja rewrites tracebacks to carry them)."""
    folders = tuple(str(Path(p).resolve()) for p in env.loader.searchpath)  # type: ignore[union-attr]
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.lineno and str(Path(frame.filename).resolve()).startswith(folders):
            return f"{frame.filename}:{frame.lineno}"
    return ""


# premailer's options (docs/libraries.md): media queries stay, !important kept, classes kept.
PREMAILER_OPTIONS: dict[str, Any] = {
    "strip_important": False,
    "remove_classes": False,
    "allow_network": False,
    "disable_link_rewrites": True,
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
}


def inline(html: str) -> str:
    """premailer with PREMAILER_OPTIONS, each style sheet's rules read once per process."""
    return _premailer()(html, **PREMAILER_OPTIONS).transform()


_RULES: dict[tuple[str, int], tuple[list, list]] = {}
_KEPT: dict[int, tuple[list, str]] = {}  # id of a cached list of leftover rules -> it, its text


@functools.cache
def _premailer() -> type:
    """premailer's Premailer, reading each style sheet's rules once per process.

    Every edition and variant carries the same <style> block: premailer parses it once (its own
    cache) but turns the parsed rules into selector/declaration strings again for each document,
    ~5 ms a time, six times per check, and writes the rules it leaves in <style> (the media
    queries) out again, ~4 ms. The rules depend only on the CSS text and the options, which
    inline() never varies; transform() copies them into a list of its own before sorting, and
    the text of the same leftover rules is the same (premailer's own cache already shares the
    parsed sheet between documents, and marking its rules !important again changes nothing).
    """
    Premailer = _import_premailer()  # noqa: N806  (the class)
    return _reading_rules_once(Premailer)


def _reading_rules_once(Premailer: type) -> type:  # noqa: N803  (a class)
    """Premailer with the two steps _premailer describes done once per style sheet; Premailer
    itself (correct, only slower) if a premailer release no longer has those private steps."""
    if not all(hasattr(Premailer, m) for m in ("_parse_style_rules", "_css_rules_to_string")):
        return Premailer

    class _Premailer(Premailer):  # type: ignore[misc]
        def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list, list]:
            key = (css_body, ruleset_index)
            found = _RULES.get(key)
            if found is None:
                if len(_RULES) > 64:  # bounded: a preview session edits the CSS many times
                    _RULES.clear()
                    _KEPT.clear()
                found = _RULES[key] = super()._parse_style_rules(css_body, ruleset_index)
            return found

        def _css_rules_to_string(self, rules: list) -> str:
            kept = _KEPT.get(id(rules))
            if kept is not None and kept[0] is rules:
                return kept[1]
            text = super()._css_rules_to_string(rules)
            if any(rules is leftover for _, leftover in _RULES.values()):
                _KEPT[id(rules)] = (rules, text)  # the list kept alive: its id stays its own
            return text

    return _Premailer


def _import_premailer() -> type:
    """premailer's Premailer class, without importing requests.

    premailer imports requests (~40 ms, a third of premailer's import: the check's process pays
    it before the first message) only to fetch external style sheets, which inline() never does
    (allow_network=False). Unless requests is imported already, premailer's `import requests`
    binds a stand-in module, which nothing else ever sees (it leaves sys.modules as soon as
    premailer is imported: any other `import requests` imports the real one, submodules and
    all); should premailer use one of its attributes, the stand-in imports the real module and
    answers from it.
    """
    import importlib
    import sys
    import types

    stand_in = None
    if "requests" not in sys.modules:
        stand_in = types.ModuleType("requests", "Stands in for requests in premailer.")

        def load(name: str) -> Any:
            return getattr(importlib.import_module("requests"), name)

        stand_in.__getattr__ = load  # type: ignore[method-assign]  (a module's own __getattr__)
        sys.modules["requests"] = stand_in
    try:
        from premailer import Premailer
    finally:
        if stand_in is not None and sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]
    return Premailer


def _tidy_text(text: str) -> str:
    """At most one blank line in a row and no trailing spaces: templates need not care."""
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_edition(
    cfg: Config, alert: Alert | str | Path, lang: str, variant: str = "member"
) -> Edition:
    """One edition: HTML inlined once and the plain-text part, with recipient tokens."""
    if not isinstance(alert, Alert):
        alert = load_alert(cfg, alert)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    if lang not in alert.texts:
        raise NewsletterError(
            f"{alert.path}: no {lang} edition (languages = {list(alert.languages)} in alert.toml)."
        )
    env = i18n.jinja_env(cfg, lang)
    ctx = _context(cfg, alert, lang, variant)
    html = inline(_render(env, LAYOUT_HTML, ctx))
    text = _tidy_text(_render(env, LAYOUT_TEXT, ctx))
    gettext = i18n.translations(cfg, lang).gettext
    s = i18n.EMAIL_STRINGS
    t = alert.texts[lang]
    other = next((x for x in alert.languages if x != lang), lang)
    return Edition(
        alert_id=alert.id,
        lang=lang,
        variant=variant,
        subject=t.subject,
        preheader=t.preheader,
        html=html,
        text=text,
        greeting_named=gettext(s["greeting_named"]),
        greeting_anonymous=gettext(s["greeting_anonymous"]),
        forward_body=_forward_body(cfg, alert, lang, gettext(s["forward_intro"])),
        language_subject=gettext(s["language_subject"]) % {"language": _language_name(other, lang)},
        unsubscribe_subject=gettext(s["unsubscribe_subject"]) % {"org": cfg.org.name},
    )


def _forward_body(cfg: Config, alert: Alert, lang: str, intro: str) -> str:
    """The mailto: forward's body: what a friend needs to act without any web page — the
    headline, each petition's address, each event's when and where — then the summary and
    the archive link (with a base URL) or the alert's other links."""
    t = alert.texts[lang]
    gettext = i18n.translations(cfg, lang).gettext
    parts = [intro % {"org": cfg.org.name}, t.headline]
    used: set[str] = set()
    for part in t.parts:
        if part.kind != "block":
            continue
        if part.block == "petition" and part.ref not in used:
            used.add(part.ref)
            parts.append(f"{gettext('Sign the petition')}:\n{alert.links[part.ref]}")
        elif part.block == "event" and part.ref not in used:
            used.add(part.ref)
            ev = event_view(cfg, alert, alert.events[part.ref], lang)
            parts.append(
                f"{ev.title}\n{gettext('When:')} {ev.when}\n"
                f"{gettext('Where:')} {ev.place}, {ev.address}"
            )
    parts.append(t.preheader)
    url = links.archive_url(cfg, alert.id, lang)
    if url:
        parts.append(url)
    else:
        rest = [u for k, u in alert.links.items() if k not in used and not is_example_value(u)]
        parts += rest[:2]
    body = "\n\n".join(parts)
    if len(body) > FORWARD_BODY_MAX:
        body = body[: FORWARD_BODY_MAX - 2] + "…"
    # A final newline: a mailto: URL ending in "." loses it to link detection in plain text.
    return body + "\n"


def render_editions(
    cfg: Config, alert: Alert | str | Path, variant: str = "member"
) -> dict[str, Edition]:
    """Every language's edition of an alert, default language first."""
    if not isinstance(alert, Alert):
        alert = load_alert(cfg, alert)
    return {lang: render_edition(cfg, alert, lang, variant) for lang in alert.languages}


# --- newsletter build -------------------------------------------------------------------------


def sample_links(cfg: Config, edition: Edition) -> dict[str, str]:
    """Token values for a sample member (a public id of zeros when a base URL needs one)."""
    return links.edition_links(cfg, edition, SAMPLE_PUBLIC_ID if links.base_url(cfg) else None)


SAMPLE_PUBLIC_ID = "0" * 32  # no contact has it: journal public ids are random


SAMPLE_NAME = "Ana García"
SAMPLE_FIELDS = {"first_name": "Ana", "last_name": "García"}


def sample_values(cfg: Config, edition: Edition) -> dict[str, str]:
    """Token values for the sample member: links and the greeting (`[greeting] name` over
    SAMPLE_FIELDS, as a member with those columns would be greeted)."""
    from newsletter.message import greeting_name

    values = sample_links(cfg, edition)
    who = _SampleRecipient("ana@example.org", SAMPLE_NAME, SAMPLE_FIELDS)
    values[tokens.NAME] = edition.greeting_named.format(name=greeting_name(cfg.greeting.name, who))
    return values


def fill_edition(edition: Edition, values: dict[str, str]) -> Edition:
    """A copy of the edition with the tokens of both parts filled."""
    return replace(
        edition,
        html=tokens.fill(edition.html, values, escape_html=True),
        text=tokens.fill(edition.text, values, escape_html=False),
    )


@dataclass(frozen=True)
class _SampleRecipient:
    email: str
    name: str
    fields: dict[str, str]


def run_build(cfg: Config, alert_path: str | Path, out: str | Path | None = None) -> Path:
    """Write <lang>.html/.txt/.eml and the events' .ics files; print what and how to preview."""
    import click

    alert = load_alert(cfg, alert_path)
    folder = Path(out) if out else cfg.path("build") / alert.id
    # Everything is made before anything is written: a bad alert leaves no half-built folder.
    files: dict[str, bytes] = {}
    for lang, edition in render_editions(cfg, alert).items():
        filled = fill_edition(edition, sample_values(cfg, edition))
        files[f"{lang}.html"] = filled.html.encode()
        files[f"{lang}.txt"] = filled.text.encode()
        eml = _sample_eml(cfg, edition)
        if eml is not None:
            files[f"{lang}.eml"] = eml
    for event in alert.events.values():
        if event.start is not None:
            files[f"{event.id}.ics"] = event_ics(cfg, alert, event.id).encode("utf-8")
    for name, data in files.items():
        try:
            write_atomic(folder / name, data)
        except OSError as err:
            raise NewsletterError(
                f"{folder / name}: cannot write it ({err.strerror}). Give --out a folder you can "
                "write to."
            ) from None
        click.echo(f"wrote {folder / name} ({len(data) / 1024:.1f} KB)")
    first = folder / f"{alert.default_language}.html"
    click.echo(
        f"Open {first.resolve().as_uri()} in a browser, or run: newsletter preview {alert.path}"
    )
    return folder


def _sample_eml(cfg: Config, edition: Edition) -> bytes | None:
    """A complete message to a sample recipient, built by the message step (None if absent)."""
    try:
        from newsletter import message
    except ImportError:
        return None
    recipient = _SampleRecipient("ana@example.org", SAMPLE_NAME, {})
    prepared = message.prepare(cfg, edition)
    _msg_id, data = prepared.build(recipient, sample_links(cfg, edition))
    return data
