"""A member's own pages: switch language (/l), unsubscribe and resubscribe (/u).

GET and HEAD never change anything (mail scanners follow every link with GET); a change is a POST
with a CSRF field, or RFC 8058's one-click POST from the mail client.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from newsletter import i18n, links
from newsletter.contacts import Contacts
from newsletter.suppressions import Suppressions
from newsletter.web.common import check_csrf, make_csrf, other_language, pages

bp = Blueprint("member", __name__)


@bp.route("/l/<token>", methods=["GET", "POST"])
def language(token: str) -> Response:
    """Offer, then make, the switch to the other language."""
    p = pages()
    data = p.token("language", token)  # BadToken: the 400 page
    target = other_language(data.lang)
    values = {
        "target_name": links.LANG_NAMES[target],
        "archive_url": f"{p.root}/a/{data.alert_id}/{target}",
    }
    if request.method != "POST":  # GET and HEAD: never a change
        if p.contact(data) is None:
            return p.notice("no_contact", 404, target)
        html = p.render(
            target,
            "language.html",
            action=f"{p.root}/l/{token}",
            csrf=make_csrf(p.secret, "language", token, p.clock()),
            **values,
        )
        return p.page(html)
    if not check_csrf(p.secret, "language", token, request.form.get("csrf", ""), p.clock()):
        return p.notice("form_expired", 400, target)
    with p.journal() as j:
        contact = Contacts(j).linked(data.person, data.issued)
        if contact is None:
            return p.notice("no_contact", 404, target)
        Contacts(j).set_language(contact.id, target)
    return p.page(p.render(target, "language_done.html", **values))


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> Response:
    """The confirm page on GET; on POST (the button, or one-click) the suppression."""
    p = pages()
    cfg = p.cfg
    data = p.token("unsubscribe", token)  # BadToken: the 400 page
    lang = data.lang
    if request.method != "POST":  # GET and HEAD: never a change
        with p.journal() as j:
            contact = Contacts(j).linked(data.person, data.issued)
            if contact is None:
                return p.notice("no_contact", 404, lang)
            if Suppressions(j).has(contact.email):
                # Unsubscribed already (maybe by the mail client's one-click button, which
                # shows no page): this link is their way back.
                return _unsubscribed_page(token, lang)
        other = other_language(lang)
        t_other = i18n.translations(cfg, other, "web")
        # By the public id, also when this link is an old one that carries a row number.
        language_token = links.make_token(
            p.secret, "language", contact.public_id, data.alert_id, lang
        )
        html = p.render(
            lang,
            "unsubscribe.html",
            action=f"{p.root}/u/{token}",
            other=other,
            other_heading=t_other.gettext("Would you rather read us in %(language)s?")
            % {"language": links.LANG_NAMES[other]},
            other_link=t_other.gettext("Get our emails in %(language)s")
            % {"language": links.LANG_NAMES[other]},
            language_url=f"{p.root}/l/{language_token}",
        )
        return p.page(html)
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    if not one_click and request.form.get("confirm") != "1":
        return p.notice("error", 400, lang)
    with p.journal() as j:
        contact = Contacts(j).linked(data.person, data.issued)
        if contact is None:
            return p.notice("no_contact", 404, lang)
        Suppressions(j).add(contact.email, "one-click" if one_click else "unsubscribe page")
    return _unsubscribed_page(token, lang)


def _unsubscribed_page(token: str, lang: str) -> Response:
    p = pages()
    html = p.render(
        lang,
        "unsubscribed.html",
        resubscribe_action=f"{p.root}/u/{token}/resubscribe",
        csrf=make_csrf(p.secret, "resubscribe", token, p.clock()),
    )
    return p.page(html)


@bp.post("/u/<token>/resubscribe")
def resubscribe(token: str) -> Response:
    """Undo an unsubscribe, from the page that confirmed it."""
    p = pages()
    data = p.token("unsubscribe", token)  # BadToken: the 400 page
    if not check_csrf(p.secret, "resubscribe", token, request.form.get("csrf", ""), p.clock()):
        return p.notice("form_expired", 400, data.lang)
    with p.journal() as j:
        contact = Contacts(j).linked(data.person, data.issued)
        if contact is None:
            return p.notice("no_contact", 404, data.lang)
        Suppressions(j).remove(contact.email)
    return p.page(p.render(data.lang, "resubscribed.html"))
