"""One rendered edition of an alert, as plain data.

Apart from render.py (Jinja, Babel, premailer) so that what only carries editions (the send's
processes: `campaign` receives them from the check's process, `pool`'s workers build messages
from them) never imports the renderer. `render.Edition` is this class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edition:
    """One language and variant of an alert, inlined once; recipient values are tokens."""

    alert_id: str
    lang: str
    variant: str
    subject: str
    preheader: str
    html: str
    text: str
    greeting_named: str  # "Dear {name}," — str.format(name=…) per recipient
    greeting_anonymous: str
    forward_body: str  # what a mailto: forward prefills
    language_subject: str
    unsubscribe_subject: str
