"""`newsletter check`: every problem of an alert's editions, each with a stable id, place and fix.

The rules are plain functions over an edition's HTML and text (parsed with lxml, never regexes over
markup), so tests can feed them strings. `run_check` renders every language and variant raw (with
recipient tokens) and the member copy with sample links filled, collects all problems, prints one
line each, and fails on any error.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import click
import lxml.html
from lxml import etree

from newsletter import tokens
from newsletter.config import Config
from newsletter.errors import NewsletterError

# Gmail clips a message whose HTML is over about 102 KB; warn well before.
SIZE_LIMIT = 102 * 1024
SIZE_WARN = 80 * 1024
VARIANTS = ("member", "forward", "archive")
FILLED = "member, sample links"  # the variant name shown for the filled member copy
# Check never needs the real secret: sample links are only looked at, never sent.
SAMPLE_SECRET = "check-sample-secret-never-used-to-send"

# Every token the code fills; anything else shaped like a token is a typo or a stale template.
KNOWN_TOKENS = frozenset(
    v
    for k, v in vars(tokens).items()
    if k.isupper() and isinstance(v, str) and tokens.TOKEN_RE.fullmatch(v)
)
FIELD_RE = re.compile(r"__NL_FIELD_[A-Z0-9_]+?__")
# Jinja syntax that survived rendering (a template that printed a template, or a raw block).
JINJA_LEFTOVER_RE = re.compile(r"\{\{|\{%|\{#")
# Fallback when content.py has no WRITE_MARK_RE: `[[WRITE: ...]]`.
_WRITE_MARK_FALLBACK = re.compile(r"\[\[\s*WRITE\b[^\]]*\]\]")
URL_IN_TEXT_RE = re.compile(r"(?:https?://|mailto:|tel:)[^\s<>\"')\]]+")
HIDDEN_STYLE_RE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all|max-height\s*:\s*0",
    re.I,
)
EVENT_ATTR_RE = re.compile(r"^on[a-z]+$", re.I)


class EditionLike(Protocol):
    """What the rules need of `render.Edition`."""

    lang: str
    variant: str
    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True)
class Problem:
    """One finding: `id` (E-… error, W-… warning), where it is, what is wrong, and the fix."""

    id: str
    where: str
    message: str
    fix: str
    variants: tuple[str, ...] = ()  # which copies show it: member, forward, archive, filled

    @property
    def is_error(self) -> bool:
        return self.id.startswith("E-")

    def line(self) -> str:
        """One printable line, the id styled (click.echo drops styles for NO_COLOR or a pipe)."""
        tag = click.style(
            self.id.ljust(15), fg="red" if self.is_error else "yellow", bold=self.is_error
        )
        where = f"{self.where} ({', '.join(self.variants)})" if self.variants else self.where
        return f"{tag} {where}: {self.message}. Fix: {self.fix}"


@dataclass(frozen=True)
class Place:
    """Where in the output a rule looks: edition language, variant, part."""

    lang: str
    variant: str
    part: str = "html"

    def at(self, line: int | None = None, element: str = "") -> str:
        s = f"{self.lang} {self.part}"
        if line:
            s += f":{line}"
        if element:
            s += f" {element}"
        return s


# --- small helpers -------------------------------------------------------------------------------


def _write_mark_re() -> re.Pattern[str]:
    try:
        from newsletter.content import WRITE_MARK_RE

        return WRITE_MARK_RE
    except ImportError:
        return _WRITE_MARK_FALLBACK


def _is_example(value: str) -> bool:
    try:
        from newsletter.content import is_example_value
    except ImportError:
        host = (urlsplit(value).hostname or value.rsplit("@", 1)[-1]).lower()
        return host in ("example.org", "example.com", "example.net") or host.endswith(
            (".example.org", ".example.com", ".example.net")
        )
    return bool(is_example_value(value))


def _norm(s: str) -> str:
    return " ".join(s.split())


def _short(s: str, n: int = 60) -> str:
    s = _norm(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _describe(el: etree._Element) -> str:
    """`<a href="…">` — enough of a tag to find it in the HTML."""
    attrs = []
    for name in ("href", "src", "rel", "class", "id"):
        v = el.get(name)
        if v is not None:
            attrs.append(f'{name}="{_short(v, 50)}"')
            break
    return f"<{el.tag}{' ' if attrs else ''}{' '.join(attrs)}>"


def parse_html(html: str) -> etree._Element:
    """The document root (lxml keeps source line numbers for the report)."""
    try:
        return lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError) as err:
        raise NewsletterError(
            f"the rendered HTML cannot be parsed ({err}). Check the layout template."
        ) from None


def _elements(root: etree._Element) -> Iterator[etree._Element]:
    for el in root.iter():
        if isinstance(el.tag, str):  # skip comments and processing instructions
            yield el


def _hidden(el: etree._Element) -> bool:
    node: etree._Element | None = el
    while node is not None:
        if HIDDEN_STYLE_RE.search(node.get("style") or "") or node.get("hidden") is not None:
            return True
        node = node.getparent()
    return False


def html_links(root: etree._Element) -> list[tuple[etree._Element, str]]:
    """(element, URL) for every link and resource the HTML points at."""
    out = []
    for el in _elements(root):
        for attr in ("href", "src", "background", "action"):
            v = el.get(attr)
            if v is not None and not (
                el.tag == "a" and attr == "href" and v.startswith("#") and len(v) > 1
            ):
                out.append((el, v.strip()))
    return out


# --- the rules over one edition ------------------------------------------------------------------


def check_size(html: str, place: Place) -> list[Problem]:
    size = len(html.encode("utf-8"))
    if size > SIZE_LIMIT:
        return [
            Problem(
                "E-SIZE",
                place.at(),
                f"HTML is {size / 1024:.1f} KB; Gmail clips beyond {SIZE_LIMIT // 1024} KB and hides "
                "the footer and unsubscribe link",
                "shorten the body or drop blocks, images' inline data or repeated styles",
            )
        ]
    if size > SIZE_WARN:
        return [
            Problem(
                "W-SIZE",
                place.at(),
                f"HTML is {size / 1024:.1f} KB, close to Gmail's {SIZE_LIMIT // 1024} KB clipping limit",
                "shorten the body before it grows past the limit",
            )
        ]
    return []


def check_structure(root: etree._Element, edition: EditionLike, place: Place) -> list[Problem]:
    """`lang`, preheader, images' alt, no JavaScript, no external stylesheet."""
    problems: list[Problem] = []
    lang = root.get("lang")
    if not lang:
        problems.append(
            Problem(
                "E-LANG",
                place.at(root.sourceline, "<html>"),
                "the <html> element has no lang",
                f'the layout template must write <html lang="{edition.lang}">',
            )
        )
    elif lang.split("-")[0].lower() != edition.lang:
        problems.append(
            Problem(
                "E-LANG",
                place.at(root.sourceline, "<html>"),
                f'<html lang="{lang}"> in the {edition.lang} edition',
                f'write lang="{edition.lang}" (the edition\'s language)',
            )
        )
    problems += check_preheader(root, edition, place)
    for el in _elements(root):
        tag = el.tag.lower()
        if tag == "img":
            alt = el.get("alt")
            if alt is None:
                problems.append(
                    Problem(
                        "E-ALT",
                        place.at(el.sourceline, _describe(el)),
                        "image without alt text",
                        'give it alt="…" describing it (alt="" only for a decorative spacer)',
                    )
                )
            elif not alt.strip() and not _hidden(el):
                problems.append(
                    Problem(
                        "W-ALT",
                        place.at(el.sourceline, _describe(el)),
                        "image with empty alt",
                        "fine for a decorative image; otherwise describe it",
                    )
                )
        elif tag == "script":
            problems.append(
                Problem(
                    "E-JS",
                    place.at(el.sourceline, _describe(el)),
                    "JavaScript in an email",
                    "remove the <script>: mail clients strip it or mark the message as spam",
                )
            )
        elif tag == "link" and "stylesheet" in (el.get("rel") or "").lower():
            problems.append(
                Problem(
                    "E-CSS",
                    place.at(el.sourceline, _describe(el)),
                    "external stylesheet",
                    "put the CSS in the template's <style> block; premailer inlines it",
                )
            )
        elif tag == "style" and re.search(r"@import\b", el.text or ""):
            problems.append(
                Problem(
                    "E-CSS",
                    place.at(el.sourceline, "<style>"),
                    "@import of an external stylesheet",
                    "put the rules in the <style> block itself",
                )
            )
        for attr in el.attrib:
            if EVENT_ATTR_RE.match(attr):
                problems.append(
                    Problem(
                        "E-JS",
                        place.at(el.sourceline, _describe(el)),
                        f"event handler {attr}=",
                        "remove it: no JavaScript runs in an email",
                    )
                )
    return problems


def check_preheader(root: etree._Element, edition: EditionLike, place: Place) -> list[Problem]:
    if not edition.preheader.strip():
        return [
            Problem(
                "E-PREHEADER",
                place.at(),
                "no preheader",
                "write the preheader (the inbox preview line) in the alert's content",
            )
        ]
    want = _norm(edition.preheader)
    body = root.find("body")
    for el in _elements(body if body is not None else root):
        if _hidden(el) and want in _norm(el.text_content()):
            return []
    return [
        Problem(
            "E-PREHEADER",
            place.at(),
            f'preheader "{_short(want)}" is not in the HTML as hidden text',
            "the layout template must draw it in a hidden element (display:none) at the top",
        )
    ]


def check_postal(cfg: Config, root: etree._Element, text: str, place: Place) -> list[Problem]:
    """The organisation's postal address, visible in both parts (CAN-SPAM)."""
    address = cfg.sender.postal_address.strip()
    if not address:
        return [
            Problem(
                "E-POSTAL",
                f"{cfg.source} [sender] postal_address",
                "no postal address is set",
                "set [sender] postal_address (the law requires it in every message)",
            )
        ]
    pieces = [_norm(p) for p in re.split(r"[\n,]", address) if p.strip()]
    problems = []
    html_text = _norm(" ".join(t for t in _visible_text(root)))
    for part, haystack in (("html", html_text), ("text", _norm(text))):
        lost = [p for p in pieces if p not in haystack]
        if lost:
            problems.append(
                Problem(
                    "E-POSTAL",
                    dataclasses.replace(place, part=part).at(),
                    f'the postal address is not shown (missing "{_short(lost[0])}")',
                    "the footer template must print [sender] postal_address",
                )
            )
    return problems


def _visible_text(root: etree._Element) -> Iterator[str]:
    body = root.find("body")
    for el in _elements(body if body is not None else root):
        if el.tag in ("style", "script", "title") or _hidden(el):
            continue
        if el.text:
            yield el.text
        # tail text belongs to the parent, which was visible when we got here
    for el in _elements(body if body is not None else root):
        if el.tail and not _hidden(el.getparent()):
            yield el.tail


def check_unsubscribe(root: etree._Element, place: Place, url: str) -> list[Problem]:
    """A visible link to `url` (the unsubscribe token or its filled value)."""
    if not url:
        return [
            Problem(
                "E-UNSUB",
                place.at(),
                "no unsubscribe link can be made",
                "set [web] base_url (one-click pages) or [sender] unsubscribe_mailto",
            )
        ]
    for el in root.iter("a"):
        if (el.get("href") or "").strip() == url and _norm(el.text_content()) and not _hidden(el):
            return []
    return [
        Problem(
            "E-UNSUB",
            place.at(),
            "no visible unsubscribe link",
            "the footer must show a link to the unsubscribe URL with visible words",
        )
    ]


def check_links(root: etree._Element, place: Place, *, raw: bool, local_ok: bool) -> list[Problem]:
    """Absolute https links only (mailto:/tel: too); in the raw copy a known token stands for a URL."""
    problems = []
    for el, url in html_links(root):
        where = place.at(el.sourceline, _describe(el))
        if raw and url in KNOWN_TOKENS:
            continue
        if tokens.TOKEN_RE.fullmatch(url):
            continue  # reported once, as E-TOKEN, by check_placeholders
        scheme = urlsplit(url).scheme.lower()
        if url.lower().startswith("javascript:"):
            problems.append(
                Problem("E-JS", where, "javascript: link", "link to an https page instead")
            )
        elif scheme in ("https", "mailto", "tel"):
            if scheme == "mailto" and not url[7:].split("?")[0] and "body=" not in url:
                problems.append(
                    Problem(
                        "E-LINK-RELATIVE",
                        where,
                        "mailto: link with no address",
                        "give the address (or fill the setting the link comes from)",
                    )
                )
        elif scheme == "http":
            host = urlsplit(url).hostname or ""
            if local_ok and host in ("127.0.0.1", "localhost"):
                problems.append(
                    Problem(
                        "W-LINK-LOCAL",
                        where,
                        f"link to {_short(url)} only works on this machine",
                        "set [web] base_url to the public https address before sending",
                    )
                )
            else:
                problems.append(
                    Problem(
                        "E-LINK-HTTP",
                        where,
                        f"plain http link {_short(url)}",
                        "use the https:// address (mail clients warn about http)",
                    )
                )
        elif scheme:
            problems.append(
                Problem(
                    "E-LINK-HTTP",
                    where,
                    f"{scheme}: link {_short(url)}",
                    "use an https:// link (or mailto:/tel:)",
                )
            )
        else:
            problems.append(
                Problem(
                    "E-LINK-RELATIVE",
                    where,
                    f'relative link "{_short(url)}"' if url else "empty link",
                    "write the full https:// address: an email has no base URL",
                )
            )
    return problems


def check_placeholders(
    html_root: etree._Element | None, text: str, place: Place, *, filled: bool
) -> list[Problem]:
    """`[[WRITE: …]]` markers, leftover Jinja syntax and tokens: unknown ones, or any once filled."""
    problems: list[Problem] = []
    mark_re = _write_mark_re()
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
        for m in mark_re.finditer(s):
            add(
                "E-PLACEHOLDER",
                part,
                line,
                m.group(0),
                f'unfinished "{_short(m.group(0))}"',
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


def _tel_digits(s: str) -> str:
    d = re.sub(r"\D", "", s)
    return d[1:] if len(d) == 11 and d.startswith("1") else d


def check_text_links(root: etree._Element, text: str, place: Place) -> list[Problem]:
    """Every link of the HTML appears in the text part (a tel: by its digits, a mailto: by its address)."""
    problems = []
    text_digits = _tel_digits(text)
    seen = set()
    for el in root.iter("a"):
        url = (el.get("href") or "").strip()
        if not url or url.startswith("#") or url in seen:
            continue
        seen.add(url)
        scheme = urlsplit(url).scheme.lower()
        if url in text:
            continue
        if scheme == "tel" and _tel_digits(url) and _tel_digits(url) in text_digits:
            continue
        if scheme == "mailto":
            address = unquote(url[7:].split("?")[0])
            if address and address in text:
                continue
        problems.append(
            Problem(
                "E-TEXT-LINK",
                dataclasses.replace(place, part="text").at(),
                f"the HTML links to {_short(url)} ({_short(el.text_content(), 30)!r}) but the text "
                "part does not",
                "add the URL to the block's .txt template",
            )
        )
    return problems


def check_edition(
    cfg: Config, edition: EditionLike, *, filled: bool = False, unsubscribe_url: str | None = None
) -> list[Problem]:
    """Every rule over one edition. `unsubscribe_url`: what the visible unsubscribe link must point at
    (the token in a raw member copy, the filled URL in a filled one); None where no link belongs."""
    place = Place(edition.lang, FILLED if filled else edition.variant)
    root = parse_html(edition.html)
    problems = check_size(edition.html, place)
    problems += check_structure(root, edition, place)
    problems += check_postal(cfg, root, edition.text, place)
    if unsubscribe_url is not None:
        problems += check_unsubscribe(root, place, unsubscribe_url)
    local_ok = links_base_is_local(cfg)
    problems += check_links(root, place, raw=not filled, local_ok=local_ok)
    problems += check_placeholders(root, edition.text, place, filled=filled)
    problems += check_text_links(root, edition.text, place)
    problems += check_examples(root, place)
    return [
        dataclasses.replace(p, variants=(place.variant,))
        if p.where.startswith(f"{place.lang} ")
        else p
        for p in problems
    ]


def links_base_is_local(cfg: Config) -> bool:
    return (urlsplit(cfg.web.base_url).hostname or "") in ("127.0.0.1", "localhost")


def check_examples(root: etree._Element, place: Place) -> list[Problem]:
    """example.org links: stand-ins for URLs the source lost, to replace before a real send."""
    problems = []
    seen = set()
    for el, url in html_links(root):
        if (
            url not in seen
            and urlsplit(url).scheme in ("https", "http", "mailto")
            and _is_example(url)
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


def check_config(cfg: Config) -> list[Problem]:
    """Settings that still hold example values."""
    problems = []
    for section in ("sender", "org", "web"):
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, str) and value and _is_example(_addr(value)):
                key = f.name.rstrip("_")
                problems.append(
                    Problem(
                        "W-EXAMPLE",
                        f"{cfg.source} [{section}] {key}",
                        f"{_short(_addr(value))} is an example value",
                        f"set the organisation's real {key.replace('_', ' ')} before sending",
                    )
                )
    return problems


def check_alert_examples(alert: object) -> list[Problem]:
    """Links and contact addresses in alert.toml that are still example values."""
    toml = Path(alert.path) / "alert.toml"  # type: ignore[attr-defined]
    found = [(f"[links] {k}", v) for k, v in alert.links.items()]  # type: ignore[attr-defined]
    for cid, c in alert.contacts.items():  # type: ignore[attr-defined]
        found += [(f"[contacts.{cid}] phone", c.phone), (f"[contacts.{cid}] email", c.email)]
    return [
        Problem(
            "W-EXAMPLE",
            f"{toml} {key}",
            f"{_short(value)} is an example value standing in for a fact the source lost",
            "write the real value before sending",
        )
        for key, value in found
        if value and _is_example(value)
    ]


def _addr(value: str) -> str:
    """The address inside `Name <addr>`, else the value."""
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value


# --- the whole alert -----------------------------------------------------------------------------


def check_translations(cfg: Config, languages: Iterable[str]) -> list[Problem]:
    from newsletter import i18n

    problems = []
    used = i18n.template_msgids(cfg)
    for lang in languages:
        for msgid in i18n.missing_translations(cfg, lang):
            problems.append(
                Problem(
                    "E-I18N",
                    f"templates/email/{used.get(msgid, '?')}",
                    f'"{_short(msgid)}" has no {lang} translation',
                    f"add its msgstr to {i18n.catalog_path(cfg, lang).relative_to(cfg.root)}"
                    if i18n.catalog_path(cfg, lang).is_relative_to(cfg.root)
                    else f"add its msgstr to {i18n.catalog_path(cfg, lang)}",
                )
            )
    return problems


class _SampleSecretConfig(Config):
    """The user's settings with a stand-in secret, so check can build sample member links."""

    @property
    def secret(self) -> str | None:
        return super().secret or SAMPLE_SECRET


def sample_values(cfg: Config, edition: object) -> dict[str, str]:
    """Token → value for the sample member of `newsletter build`, links made as for a real send."""
    from newsletter import render

    sample_cfg = _SampleSecretConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    )
    values = render.sample_links(sample_cfg, edition)  # type: ignore[arg-type]
    values[tokens.NAME] = edition.greeting_named.format(name=render.SAMPLE_NAME)  # type: ignore[attr-defined]
    return values


def fill_edition(edition: object, values: dict[str, str]) -> object:
    """A copy of the edition with the tokens of both parts filled."""
    return dataclasses.replace(
        edition,  # type: ignore[type-var]
        html=tokens.fill(edition.html, values, escape_html=True),  # type: ignore[attr-defined]
        text=tokens.fill(edition.text, values, escape_html=False),  # type: ignore[attr-defined]
    )


def content_marks(alert_path: Path) -> list[Problem]:
    """`[[WRITE: …]]` markers in the alert's own files, by file and line (where the editor writes)."""
    mark_re = _write_mark_re()
    problems = []
    for path in sorted(p for p in alert_path.rglob("*") if p.is_file()):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(lines, 1):
            for m in mark_re.finditer(line):
                problems.append(
                    Problem(
                        "E-PLACEHOLDER",
                        f"{path}:{n}",
                        f'unfinished "{_short(m.group(0))}"',
                        "replace the marker with the text it asks for",
                    )
                )
    return problems


def collect(cfg: Config, alert_path: Path) -> list[Problem]:
    """Every problem of the alert: content markers, settings, translations, each edition."""
    from newsletter import content, render

    alert = content.load_alert(cfg, alert_path)
    problems = content_marks(Path(alert.path))
    sources = check_config(cfg) + check_alert_examples(alert)
    problems += sources
    problems += check_translations(cfg, alert.languages)
    for lang in alert.languages:
        for variant in VARIANTS:
            edition = render.render_edition(cfg, alert, lang, variant=variant)
            unsub = tokens.UNSUBSCRIBE_URL if variant == "member" else None
            problems += check_edition(cfg, edition, unsubscribe_url=unsub)
            if variant == "member":
                values = sample_values(cfg, edition)
                filled = fill_edition(edition, values)
                problems += check_edition(
                    cfg,
                    filled,
                    filled=True,
                    unsubscribe_url=values[tokens.UNSUBSCRIBE_URL],  # type: ignore[arg-type]
                )
    # An example URL already reported where it is set needs no second line per element.
    reported = {p.message.split(" is an example")[0] for p in sources}
    problems = [
        p
        for p in problems
        if not (
            p.id == "W-EXAMPLE" and p.variants and p.message.split(" is an example")[0] in reported
        )
    ]
    return merge(problems)


def merge(problems: list[Problem]) -> list[Problem]:
    """One line per problem: the same finding in several copies is reported once, copies named."""
    out: dict[tuple[str, str, str], Problem] = {}
    for p in problems:
        key = (p.id, p.message, re.sub(r":\d+", "", p.where))
        old = out.get(key)
        if old is None:
            out[key] = p
        else:
            extra = tuple(v for v in p.variants if v not in old.variants)
            out[key] = dataclasses.replace(old, variants=old.variants + extra)
    return sorted(out.values(), key=lambda p: (not p.is_error, p.where.split(" ")[0], p.id))


def run_check(cfg: Config, alert_path: Path) -> list[Problem]:
    """Print every problem of the alert, one line each, then a summary; raise on any error."""
    problems = collect(cfg, alert_path)
    for p in problems:
        click.echo(p.line(), color=_color())
    errors = sum(p.is_error for p in problems)
    warnings = len(problems) - errors
    summary = f"{alert_path}: {errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    if errors:
        raise NewsletterError(f"{summary}. Fix the errors above and run `newsletter check` again.")
    tail = " (warnings do not stop a send: review them)." if warnings else "."
    click.echo(click.style(summary + tail, fg="green"), color=_color())
    return problems


def _color() -> bool | None:
    import os

    return False if os.environ.get("NO_COLOR") else None
