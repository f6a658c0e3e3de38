"""The rendered HTML as the rules read it: parsed with lxml (source line numbers kept for the
report, never regexes over markup), its elements, what is hidden, and every URL it points at."""

from __future__ import annotations

import re
from collections.abc import Iterator

import lxml.html
from lxml import etree

from newsletter.check.problems import _short
from newsletter.errors import NewsletterError

HIDDEN_STYLE_RE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all|max-height\s*:\s*0",
    re.I,
)


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
