"""Recipient tokens: what the once-per-edition HTML and text carry until each recipient is filled in.

Tokens are letters, digits and underscores between double underscores, because only that shape
survives premailer/libxml2 unchanged inside href attributes (see docs: `{{ x }}` becomes `{{%20x%20}}`).
"""

from __future__ import annotations

import html
import re

NAME = "__NL_NAME__"  # greeting line, already localised ("Hola, Ana:" / "Hola:")
FORWARD_URL = "__NL_FORWARD_URL__"
LANGUAGE_URL = "__NL_LANGUAGE_URL__"
UNSUBSCRIBE_URL = "__NL_UNSUBSCRIBE_URL__"
VIEW_URL = "__NL_VIEW_URL__"
FORWARD_INTRO = "__NL_FORWARD_INTRO__"  # forward-safe copy: "NAME forwarded you this alert"
FORWARD_NOTE = "__NL_FORWARD_NOTE__"  # forward-safe copy: the friend's note
CONFIRM_URL = "__NL_CONFIRM_URL__"  # a sign-up's confirmation email: its signed link

TOKEN_RE = re.compile(r"__NL_[A-Z0-9_]+?__")


def field(name: str) -> str:
    """The token for a CSV merge field, e.g. field("city") -> "__NL_FIELD_CITY__"."""
    return f"__NL_FIELD_{re.sub(r'[^A-Za-z0-9]+', '_', name).upper()}__"


def fill(template: str, values: dict[str, str], *, escape_html: bool) -> str:
    """Replace every token in one pass; values are HTML-escaped for the HTML part.

    A token with no value becomes "" so nothing of the machinery leaks into a real message.
    One regex pass (not one str.replace per token) keeps a value that itself looks like a token
    from being expanded again.
    """
    if escape_html:
        values = {k: html.escape(v, quote=True) for k, v in values.items()}
    return TOKEN_RE.sub(lambda m: values.get(m.group(0), ""), template)


def leftover(text: str) -> list[str]:
    """Tokens still present in a filled text: any is a bug or an unknown merge field."""
    return sorted(set(TOKEN_RE.findall(text)))
