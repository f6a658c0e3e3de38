"""The rules over the alert as written, before anything renders: the editions in step (the same
blocks, named links and images), images' alt and width, and the catalogs' translations."""

from __future__ import annotations

from collections.abc import Iterable

from newsletter import i18n, render, resources
from newsletter.check.problems import Problem, _settings_file, _short
from newsletter.config import Config
from newsletter.content import Alert


def check_translations(cfg: Config, languages: Iterable[str]) -> list[Problem]:
    problems = []
    used = i18n.template_msgids(cfg)
    for lang in languages:
        po = i18n.catalog_source(cfg, lang)
        own = i18n.catalog_path(cfg, lang)
        if po == own:
            fix = f"add its msgstr to {resources.display(cfg, po)}"
        else:  # a template of the site's uses it; the packaged catalog is not the site's to edit
            fix = f"copy {po} to {resources.display(cfg, own)} and add its msgstr there"
        for msgid in i18n.missing_translations(cfg, lang, used_ids=used):
            problems.append(
                Problem(
                    "E-I18N",
                    used.get(msgid, "?"),
                    f'"{_short(msgid)}" has no {lang} translation',
                    fix,
                )
            )
    return problems


def check_content_images(cfg: Config, alert: Alert) -> list[Problem]:
    """Images as written: alt text required, a known width (else it is drawn column-wide)."""
    problems = []
    for text in alert.texts.values():
        for part in text.parts:
            for im in part.images:
                where = f"{text.path}:{im.line}"
                if not im.alt:
                    problems.append(
                        Problem(
                            "E-ALT",
                            where,
                            f"image {_short(im.src)} has no alt text",
                            "describe it between the brackets: ![what it shows](…); readers "
                            "whose mail hides images see only that",
                        )
                    )
                if not im.width:
                    problems.append(
                        Problem(
                            "W-IMAGE-WIDTH",
                            where,
                            f"image {_short(im.src)} has no known width, so it is drawn "
                            f"{render.COLUMN_WIDTH} px wide",
                            f"write ![alt](image:NAME) with [images.NAME] url and width (the "
                            f"file's pixels) in {alert.path / 'alert.toml'}",
                        )
                    )
    if cfg.org.logo_url and not cfg.org.logo_width:
        problems.append(
            Problem(
                "W-IMAGE-WIDTH",
                f"{_settings_file(cfg)} [org] logo_width",
                f"the logo has no known width, so it is drawn {render.LOGO_UNKNOWN_WIDTH} px wide",
                "set [org] logo_width to the file's width in pixels",
            )
        )
    return problems


def check_editions_in_step(alert: Alert) -> list[Problem]:
    """Each edition offers what the others do: the same blocks, named links and images.

    Deleting `::: event` from en.md must not quietly leave English readers without the event.
    """
    from collections import Counter

    def inventory(lang: str) -> Counter[str]:
        items: Counter[str] = Counter()
        for part in alert.texts[lang].parts:
            if part.kind == "block":
                items[f"::: {part.block}" + (f" {part.ref}" if part.ref else "")] += 1
            items.update(f"[…](link:{name})" for name in part.links)
            items.update(f"image {im.src}" for im in part.images)
        return items

    problems = []
    first = alert.default_language
    have = {lang: inventory(lang) for lang in alert.languages}
    for lang in alert.languages[1:]:
        for a, b in ((first, lang), (lang, first)):
            for item in have[a] - have[b]:
                pa, pb = alert.texts[a].path.name, alert.texts[b].path.name
                count = (
                    f" ({have[a][item]} times there, {have[b][item]} in {pb})"
                    if have[b][item]
                    else ""
                )
                problems.append(
                    Problem(
                        "E-EDITIONS",
                        str(alert.texts[b].path),
                        f"{item} is in {pa} but not in {pb}{count}: {b} readers would miss it",
                        f"add it to {pb} where it belongs (or remove it from {pa})",
                    )
                )
    return problems
