"""Where an edition's links go: absolute https (mailto:/tel: too) in the HTML, and every link of
the HTML also in the text part."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote, urlsplit

from lxml import etree

from newsletter import tokens
from newsletter.check.dom import _describe, html_links
from newsletter.check.placeholders import KNOWN_TOKENS
from newsletter.check.problems import Place, Problem, _short
from newsletter.content import WRITE_MARK_RE


def check_links(root: etree._Element, place: Place, *, raw: bool, local_ok: bool) -> list[Problem]:
    """Absolute https links only (mailto:/tel: too); in the raw copy a known token stands for a URL."""
    problems = []
    for el, url in html_links(root):
        where = place.at(el.sourceline, _describe(el))
        if raw and url in KNOWN_TOKENS:
            continue
        if tokens.TOKEN_RE.fullmatch(url):
            continue  # reported once, as E-TOKEN, by check_placeholders
        if WRITE_MARK_RE.search(unquote(url)):
            continue  # a link still to write: reported once, as E-PLACEHOLDER
        if not raw and not url:
            continue  # a link token filled with nothing: its own rule (E-UNSUB) names the setting
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


def _tel_digits(s: str) -> str:
    d = re.sub(r"\D", "", s)
    return d[1:] if len(d) == 11 and d.startswith("1") else d


def check_text_links(
    root: etree._Element, text: str, place: Place, exempt: frozenset[str] = frozenset()
) -> list[Problem]:
    """Every link of the HTML appears in the text part (a tel: by its digits, a mailto: by its
    address); `exempt`: links the text part replaces with words (the mailto: forward)."""
    problems = []
    text_digits = _tel_digits(text)
    seen = set()
    for el in root.iter("a"):
        url = (el.get("href") or "").strip()
        if not url or url.startswith("#") or url in seen or url in exempt:
            continue
        seen.add(url)
        scheme = urlsplit(url).scheme.lower()
        # The text part shows a URL as written; the href may carry it percent-encoded.
        if url in text or unquote(url) in text:
            continue
        if scheme == "tel" and _tel_digits(url) and _tel_digits(url) in text_digits:
            continue
        if scheme == "mailto":
            address = unquote(url[7:].split("?")[0])
            if address and address in text:
                continue
            if not address and "body=" in url:
                continue  # the prefilled forward: the text part says to use Forward instead
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
