"""`newsletter check`: every problem of an alert's editions, each with a stable id, place and fix.

The rules are plain functions over an edition's HTML and text (parsed with lxml, never regexes over
markup), so tests can feed them strings. `run_check` renders every language and variant raw (with
recipient tokens) and the member copy with sample links filled, collects all problems, prints one
line each, and fails on any error.

Several sources, one decision (the guide's small package): the rules apart, by what they read,
and `collect` here, which runs them over the alert and decides what is reported.

    problems      Problem (id, where, message, fix, variants), Place, merge: the findings
    alert         the alert as written: editions in step, images' alt and width, translations
    dom           the rendered HTML parsed: elements, hidden ones, every URL it points at
    edition       the rules over one edition (size, structure, images, preheader, postal,
                  unsubscribe) and check_edition, which runs every rule over it
    links         https links only, and every link of the HTML in the text part
    placeholders  [[WRITE: …]] marks, tokens, example values (W-EXAMPLE; E-EXAMPLE before a
                  real send: delivered_placeholders)
    sample        the sample member's links and values (a stand-in secret)

The names the rest of the code and the tests use are re-exported here (`check.collect`,
`check.check_edition`, `check.Problem`, …). `collect` is here and reads `load_alert` and the
rules it calls itself from this module, so a patch of `check.collect` or `check.load_alert`
takes effect; a rule that `check_edition` calls is read in `edition`, where it is imported.
"""

from __future__ import annotations

from pathlib import Path

import click

from newsletter import render, tokens
from newsletter.check.alert import (
    check_content_images,
    check_editions_in_step,
    check_translations,
)
from newsletter.check.dom import html_links, parse_html
from newsletter.check.edition import (
    FILLED,
    SIZE_LIMIT,
    SIZE_WARN,
    check_edition,
    check_images,
    check_postal,
    check_preheader,
    check_size,
    check_structure,
    check_unsubscribe,
    links_base_is_local,
)
from newsletter.check.links import check_links, check_text_links
from newsletter.check.placeholders import (
    KNOWN_TOKENS,
    check_alert_examples,
    check_config,
    check_examples,
    check_placeholders,
    content_marks,
    delivered_placeholders,
)
from newsletter.check.problems import Place, Problem, _error_problem, merge
from newsletter.check.sample import SAMPLE_SECRET, sample_links, sample_values
from newsletter.config import Config
from newsletter.content import Alert, load_alert
from newsletter.errors import NewsletterError
from newsletter.render import Edition

__all__ = [
    "FILLED",
    "KNOWN_TOKENS",
    "SAMPLE_SECRET",
    "SIZE_LIMIT",
    "SIZE_WARN",
    "VARIANTS",
    "Place",
    "Problem",
    "check_alert_examples",
    "check_config",
    "check_content_images",
    "check_edition",
    "check_editions_in_step",
    "check_examples",
    "check_images",
    "check_links",
    "check_placeholders",
    "check_postal",
    "check_preheader",
    "check_size",
    "check_structure",
    "check_text_links",
    "check_translations",
    "check_unsubscribe",
    "collect",
    "content_marks",
    "delivered_placeholders",
    "html_links",
    "links_base_is_local",
    "merge",
    "parse_html",
    "run_check",
    "sample_links",
    "sample_values",
]

VARIANTS = ("member", "forward", "archive")


def collect(
    cfg: Config,
    alert_path: Path,
    *,
    real_send: bool = False,
    editions: dict[str, Edition] | None = None,
    alert: Alert | None = None,
) -> list[Problem]:
    """Every problem of the alert: content markers, settings, translations, each edition.

    `real_send`: the check before an SMTP send to members, where every placeholder they would
    receive is an error (E-EXAMPLE) instead of a warning. `editions`, when given, receives the
    member editions rendered for the check, by language: `send` delivers exactly what was
    checked and renders nothing twice. `alert`: the alert at `alert_path`, when the caller has
    loaded it already.
    """
    try:
        alert = alert or load_alert(cfg, alert_path)
    except NewsletterError as err:
        if not Path(alert_path).is_dir():
            raise  # no alert at all: nothing else to check
        # Nothing renders until this is fixed; the marks and settings are still worth listing.
        broken = _error_problem("E-CONTENT", err, "correct the alert's files as the message says")
        return merge([broken, *content_marks(Path(alert_path)), *check_config(cfg)])
    marks = content_marks(Path(alert.path))
    problems = list(marks)
    sources = check_config(cfg) + check_alert_examples(alert)
    problems += sources
    problems += check_editions_in_step(alert) + check_content_images(cfg, alert)
    try:
        problems += check_translations(cfg, alert.languages)
    except NewsletterError as err:  # a catalog that cannot be read or used
        problems.append(_error_problem("E-I18N", err, "correct the catalog as the message says"))
    members: dict[str, Edition] = {}  # rendered once, for these checks and for the send
    for lang in alert.languages:
        for variant in VARIANTS:
            try:
                edition = render.render_edition(cfg, alert, lang, variant=variant)
            except NewsletterError as err:
                # Keep going: the other editions' problems are worth knowing in the same run.
                problems.append(
                    Problem(
                        "E-RENDER",
                        "render",
                        err.format_message().rstrip("."),
                        "fix what the message names, then check again",
                        (f"{lang} {variant}",),
                    )
                )
                continue
            if variant == "member":
                members[lang] = edition
            unsub = tokens.UNSUBSCRIBE_URL if variant == "member" else None
            problems += check_edition(cfg, edition, unsubscribe_url=unsub)
            if variant == "member":
                values = sample_values(cfg, edition)
                filled = render.fill_edition(edition, values)
                problems += check_edition(
                    cfg,
                    filled,
                    filled=True,
                    unsubscribe_url=values[tokens.UNSUBSCRIBE_URL],
                )
    # A marker already reported at its file and line needs no second line per edition and part.
    written = {p.message.lower() for p in marks}
    problems = [p for p in problems if not (p.variants and p.message.lower() in written)]
    # An example URL already reported where it is set needs no second line per element.
    reported = {p.message.split(" is an example")[0] for p in sources}
    problems = [
        p
        for p in problems
        if not (
            p.id == "W-EXAMPLE" and p.variants and p.message.split(" is an example")[0] in reported
        )
    ]
    if real_send:
        try:
            blocking = delivered_placeholders(cfg, alert, members)
        except NewsletterError:
            blocking = []  # an edition that does not render is already an E-RENDER above
        stopped = {p.where for p in blocking}
        problems = [p for p in problems if not (p.id == "W-EXAMPLE" and p.where in stopped)]
        problems += blocking
    if editions is not None:
        editions.update(members)
    return merge(problems)


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
