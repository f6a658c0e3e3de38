"""The findings of `newsletter check`: one Problem per finding, with a stable id, place and fix,
and the merge that reports the same finding in several copies once (the copies named).

Every other module of the check makes Problems; this one knows nothing of HTML or the alert.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import click

from newsletter.config import Config
from newsletter.errors import NewsletterError


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


def _settings_file(cfg: Config) -> str:
    """newsletter.toml as the user would type it: relative to the working directory if inside it."""
    try:
        return str(Path(cfg.source).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return cfg.source


def _norm(s: str) -> str:
    return " ".join(s.split())


def _short(s: str, n: int = 60) -> str:
    s = _norm(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _error_problem(pid: str, err: NewsletterError, fix: str) -> Problem:
    """A NewsletterError ("file:line: what. How.") as one Problem at its place."""
    msg = err.format_message().rstrip(".")
    m = re.match(r"^(\S[^:]*:\d+): (.*)$", msg, re.S)
    return Problem(pid, m[1], m[2], fix) if m else Problem(pid, "alert", msg, fix)


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
    return sorted(
        out.values(), key=lambda p: (not p.is_error, _natural(p.where.split(" ")[0]), p.id)
    )


def _natural(place: str) -> list[str | int]:
    """Sort key: "en.md:9" before "en.md:14" (str and int alternate, so lists compare)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", place)]
