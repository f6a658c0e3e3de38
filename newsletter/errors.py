"""The one root error: a user mistake prints one clear line, never a traceback."""

from __future__ import annotations

import click


class NewsletterError(click.ClickException):
    """A problem the user can fix: the message names the file, line or setting, and the fix."""

    exit_code = 1
