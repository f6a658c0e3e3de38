"""The archive: the index of alerts that went out, each edition's page, and its events' .ics."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, current_app, request

from newsletter import i18n, links, resources, tokens
from newsletter.content import WRITE_MARK_RE
from newsletter.errors import NewsletterError
from newsletter.web.common import ALERT_ID_RE, other_language, pages, tree_stamp

bp = Blueprint("archive", __name__)


# How long a look at the alerts folder and the journal holds: within it, GETs are served from
# memory; an editor's change or a finished send shows at most this much later.
RECHECK = 1.0  # seconds


def _published() -> tuple[list[Path], tuple[object, ...]]:
    """The folders of the alerts that went out, newest first, and a key that changes with them,
    their files, the templates and the catalogs. Looked at once per RECHECK."""
    p = pages()
    now = p.clock()
    seen = p.memo.get("archive")
    if seen is not None and 0 <= now - seen[0] < RECHECK:
        return seen[1], seen[2]
    where = p.cfg.path("alerts")
    try:
        with os.scandir(where) as entries:
            names = sorted(
                (e.name for e in entries if ALERT_ID_RE.fullmatch(e.name) and e.is_dir()),
                reverse=True,
            )
    except OSError:  # no alerts folder yet
        names = []
    # Only what went out: the alerts folder also holds next week's draft, and a send that
    # was planned but not confirmed reached nobody.
    with p.journal() as j:
        sent = j.sent_alerts(names)
    folders = [where / name for name in names if name in sent]
    key = (
        tuple(f.name for f in folders),
        tree_stamp(*folders, *resources.watched_folders(p.cfg)),
    )
    p.memo["archive"] = (now, folders, key)
    return folders, key


@bp.get("/")
def index() -> Response:
    """Every alert that went out, newest first, with a link per language.

    Rendered once per change: the page is kept with the key of what it was made from (see
    _published) and served as it is while that holds. Reading 300 alerts took ~1.5 s per GET.
    """
    p = pages()
    lang = request.args.get("lang", "")
    lang = lang if lang in i18n.LANGUAGES else p.cfg.defaults.language
    folders, key = _published()
    hit = p.memo.get(f"index:{lang}")
    if hit is not None and hit[0] == key:
        return p.page(hit[1])
    html = _render_index(lang, folders)
    p.memo[f"index:{lang}"] = (key, html)
    return p.page(html)


def _render_index(lang: str, folders: list[Path]) -> str:
    from newsletter import content

    p = pages()
    alerts = []
    for folder in folders:
        try:
            alert = content.load_alert(p.cfg, folder)
        except NewsletterError as err:
            current_app.logger.warning("index: skipping %s: %s", folder.name, err.message)
            continue
        entry = {
            "date": alert.date.isoformat(),
            "links": [
                {"url": f"{p.root}/a/{alert.id}/{code}", "lang": code, "subject": text.subject}
                for code in alert.languages
                if (text := alert.texts.get(code)) is not None
                and not WRITE_MARK_RE.search(text.subject)  # a draft (sent by mistake?)
            ],
        }
        if entry["links"]:
            alerts.append(entry)
    other = other_language(lang)
    return p.render(
        lang,
        "index.html",
        alerts=alerts,
        other=other,
        other_name=links.LANG_NAMES[other],
        other_url=f"{p.root}/?lang={other}",
        subscribe_url=f"{p.root}/s?lang={lang}&src=archive",
    )


def _gone_out(alert_id: str) -> bool:
    """True when the journal has a sent delivery of the alert: before that it is not public
    (an embargoed alert, next week's draft; ids are guessable dates). The preview is where
    editors look before a send. An unsent alert and one that does not exist take the same path
    to the same 404."""
    return any(f.name == alert_id for f in _published()[0])


@bp.get("/a/<alert_id>/<lang>")
def archive(alert_id: str, lang: str) -> Response:
    """One edition, archive variant: no member link, safe to share."""
    p = pages()
    if not _gone_out(alert_id) or lang not in i18n.LANGUAGES:
        return p.notice("not_found", 404)
    ed = p.edition(alert_id, lang, "archive")
    if ed is None or WRITE_MARK_RE.search(ed.text):  # `newsletter new`'s blanks: a draft
        return p.notice("not_found", 404)
    # The archive variant has no member link; blank any token left so nothing leaks.
    html = tokens.fill(
        ed.html, {tokens.VIEW_URL: links.archive_url(p.cfg, alert_id, lang)}, escape_html=True
    )
    return p.page(html)


@bp.get("/a/<alert_id>/<event_id>.ics")
def calendar(alert_id: str, event_id: str) -> Response:
    """An event of the alert as an iCalendar file."""
    from newsletter import render

    p = pages()
    alert = p.alert(alert_id) if _gone_out(alert_id) else None
    if alert is None or event_id not in alert.events:
        return p.notice("not_found", 404)
    ics = render.event_ics(p.cfg, alert, event_id)
    resp = Response(ics, mimetype="text/calendar")
    resp.headers["Content-Disposition"] = f'attachment; filename="{event_id}.ics"'
    return resp
