"""The archive: the index of alerts that went out, each edition's page, and its events' .ics."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from newsletter import i18n, links, tokens
from newsletter.content import WRITE_MARK_RE
from newsletter.errors import NewsletterError
from newsletter.web.common import ALERT_ID_RE, other_language, pages

bp = Blueprint("archive", __name__)


@bp.get("/")
def index() -> Response:
    """Every alert that went out, newest first, with a link per language."""
    from newsletter import content

    p = pages()
    cfg = p.cfg
    lang = request.args.get("lang", "")
    lang = lang if lang in i18n.LANGUAGES else cfg.defaults.language
    alerts = []
    # Only what went out: the alerts folder also holds next week's draft, and a send that
    # was planned but not confirmed reached nobody.
    with p.journal() as j:
        published = {a for a in j.alerts() if j.counts(a)["sent"]}
    where = cfg.path("alerts")
    folders = (
        sorted((f for f in where.iterdir() if f.is_dir()), reverse=True) if where.is_dir() else []
    )
    for folder in folders:
        if folder.name not in published or not ALERT_ID_RE.fullmatch(folder.name):
            continue
        try:
            alert = content.load_alert(cfg, folder)
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
    return p.page(
        p.render(
            lang,
            "index.html",
            alerts=alerts,
            other=other,
            other_name=links.LANG_NAMES[other],
            other_url=f"{p.root}/?lang={other}",
        )
    )


@bp.get("/a/<alert_id>/<lang>")
def archive(alert_id: str, lang: str) -> Response:
    """One edition, archive variant: no member link, safe to share."""
    p = pages()
    if lang not in i18n.LANGUAGES:
        return p.notice("not_found", 404)
    ed = p.edition(alert_id, lang, "archive")
    if ed is None or WRITE_MARK_RE.search(ed.text):  # `newsletter new`'s blanks: a draft
        return p.notice("not_found", 404, lang)
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
    alert = p.alert(alert_id)
    if alert is None or event_id not in alert.events:
        return p.notice("not_found", 404)
    ics = render.event_ics(p.cfg, alert, event_id)
    resp = Response(ics, mimetype="text/calendar")
    resp.headers["Content-Disposition"] = f'attachment; filename="{event_id}.ics"'
    return resp
