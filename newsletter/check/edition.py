"""The rules over one rendered edition (a language and variant, raw or filled): size, the
document's structure, images, preheader, postal address, the unsubscribe link; `check_edition`
runs them all, with the link and placeholder rules of `links` and `placeholders`."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from lxml import etree

from newsletter import tokens
from newsletter.check.dom import _describe, _elements, _hidden, parse_html
from newsletter.check.links import check_links, check_text_links
from newsletter.check.placeholders import check_examples, check_placeholders
from newsletter.check.problems import Place, Problem, _norm, _settings_file, _short
from newsletter.config import Config
from newsletter.render import Edition

# Gmail clips a message whose HTML is over about 102 KB; warn well before.
SIZE_LIMIT = 102 * 1024
SIZE_WARN = 80 * 1024
FILLED = "sample member"  # the variant name shown for the filled member copy
EVENT_ATTR_RE = re.compile(r"^on[a-z]+$", re.I)


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


def check_structure(root: etree._Element, edition: Edition, place: Place) -> list[Problem]:
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


def check_images(root: etree._Element, place: Place) -> list[Problem]:
    """Every visible image fits the 600 px column and scales down on a phone: a width attribute
    (Outlook sizes by it) of at most 600, and max-width:100% in its style."""
    problems = []
    for el in root.iter("img"):
        if _hidden(el):
            continue
        width = (el.get("width") or "").strip()
        style = re.sub(r"\s+", "", (el.get("style") or "").lower())
        what = ""
        if not width.isdigit():
            what = "image without a width attribute"
        elif int(width) > 600:
            what = f"image width={width}, wider than the 600 px column"
        elif "max-width:100%" not in style:
            what = "image without max-width:100% in its style"
        if what:
            problems.append(
                Problem(
                    "E-IMAGE-SIZE",
                    place.at(el.sourceline, _describe(el)),
                    what + ": phones would scroll sideways",
                    'give it width="<at most 536>" and style="max-width:100%;height:auto;'
                    'display:block"',
                )
            )
    return problems


def check_preheader(root: etree._Element, edition: Edition, place: Place) -> list[Problem]:
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
                f"{_settings_file(cfg)} [sender] postal_address",
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


def check_edition(
    cfg: Config, edition: Edition, *, filled: bool = False, unsubscribe_url: str | None = None
) -> list[Problem]:
    """Every rule over one edition. `unsubscribe_url`: what the visible unsubscribe link must point at
    (the token in a raw member copy, the filled URL in a filled one); None where no link belongs."""
    place = Place(edition.lang, FILLED if filled else edition.variant)
    root = parse_html(edition.html)
    problems = check_size(edition.html, place)
    problems += check_structure(root, edition, place)
    problems += check_images(root, place)
    problems += check_postal(cfg, root, edition.text, place)
    if unsubscribe_url is not None:
        problems += check_unsubscribe(root, place, unsubscribe_url)
    local_ok = links_base_is_local(cfg)
    problems += check_links(root, place, raw=not filled, local_ok=local_ok)
    problems += check_placeholders(root, edition.text, place, filled=filled)
    # Without a base URL the forward link is a prefilled mailto: the text says to use Forward.
    exempt = frozenset() if cfg.web.base_url else frozenset({tokens.FORWARD_URL})
    problems += check_text_links(root, edition.text, place, exempt)
    problems += check_examples(root, place)
    return [
        dataclasses.replace(p, variants=(place.variant,))
        if p.where.startswith(f"{place.lang} ")
        else p
        for p in problems
    ]


def links_base_is_local(cfg: Config) -> bool:
    return (urlsplit(cfg.web.base_url).hostname or "") in ("127.0.0.1", "localhost")
