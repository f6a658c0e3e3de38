"""Joining the list: the sign-up form (/s) and the confirmation link's page (/c/<token>).

Double opt-in (newsletter/subscribers.py holds the state and the rules): the form's POST always
answers with the same "check your email" page, whatever the address's state, and the email goes
out from a background thread, so neither the page nor its timing tells who is or was on the list.
The form works cross-site (`newsletter subscribe-form` prints a copy for the organisation's own
site): no CSRF field, because the confirmation email and the caps protect it. The link's GET
shows a button (mail scanners open links); only its POST confirms.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request

from newsletter import i18n, links, message, recipients, subscribers, tokens
from newsletter.config import Config
from newsletter.errors import NewsletterError
from newsletter.web.common import client_ip, other_language, pages

bp = Blueprint("subscribe", __name__)
WEB_SOURCES = ("form", "forward", "archive", "embed")  # what a request may say it came from
HONEYPOT = "website"  # a field people never see; bots fill it in


def form_values(cfg: Config, lang: str, source: str, action: str) -> dict[str, Any]:
    """What templates/web/subscribe_fields.html needs, for the page and the pasted copy alike."""
    return {
        "action": action,
        "ui": lang,
        "source": source,
        "consent": subscribers.consent(cfg, lang).text,
        "languages": [(code, links.LANG_NAMES[code]) for code in i18n.LANGUAGES],
        "name_max": subscribers.NAME_MAX,
        "honeypot": HONEYPOT,
    }


def _lang(value: str | None, default: str) -> str:
    return value if value in i18n.LANGUAGES else default


def _base() -> str:
    """Where the emails' links point: `[web] base_url`, else (serve on loopback for local use,
    where no base URL is required) the address this request came to."""
    return links.base_url(pages().cfg) or request.host_url.rstrip("/")


def _mail_queue() -> subscribers.MailQueue:
    """The app's one sign-up mail thread (created with the first email)."""
    ext = current_app.extensions
    if "newsletter.mail" not in ext:
        ext["newsletter.mail"] = subscribers.MailQueue(pages().cfg)
    return ext["newsletter.mail"]


def _form(lang: str, source: str, **extra: Any) -> str:
    p = pages()
    other = other_language(lang)
    values = {"email": "", "name": "", "chosen": lang, "error": False, **extra}
    return p.render(
        lang,
        "subscribe.html",
        other=other,
        other_name=links.LANG_NAMES[other],
        other_url=f"{p.root}/s?lang={other}" + (f"&src={source}" if source != "form" else ""),
        **form_values(p.cfg, lang, source, f"{p.root}/s"),
        **values,
    )


@bp.get("/s")
def form() -> Response:
    """The sign-up form in the reader's language (?lang=), with where they came from (?src=)."""
    p = pages()
    lang = _lang(request.args.get("lang"), p.cfg.defaults.language)
    source = request.args.get("src", "form")
    return p.page(_form(lang, source if source in WEB_SOURCES else "form"))


@bp.post("/s")
def sign_up() -> Response:
    """Always the same answer for a well-formed address; a confirmation email when allowed."""
    p = pages()
    cfg = p.cfg
    f = request.form
    ui = _lang(f.get("ui"), cfg.defaults.language)
    lang = _lang(f.get("lang"), ui)
    source = f.get("src", "form")
    source = source if source in WEB_SOURCES else "form"
    name = subscribers.clean_name(f.get("name", ""))
    try:
        address = message.check_address(recipients.check_address(f.get("email", "")[:254])[0])
    except (ValueError, NewsletterError):
        # A typo is the reader's own input: saying so tells nothing about anyone's subscription.
        html = _form(ui, source, email=f.get("email", "")[:254], name=name, chosen=lang, error=True)
        return p.page(html, 400)
    done = p.page(p.render(ui, "subscribe_sent.html", days=subscribers.CONFIRM_DAYS))
    if f.get(HONEYPOT):
        return done  # a bot: nothing recorded, nothing sent
    now = p.clock()
    with p.journal() as j:
        mail = subscribers.request_confirmation(
            j,
            address,
            client_ip(),
            cfg.subscribe.per_network_per_hour,
            datetime.fromtimestamp(now, UTC),
        )
    # The same work whether or not an email goes: the link is made either way, and the queue
    # hears of it only once the answer has gone out (call_on_close), so the mail thread never
    # competes with this request for the interpreter.
    signup = subscribers.SignUp(address, name, lang, source)
    url = f"{_base()}/c/{subscribers.make_confirm_token(p.secret, signup, now)}"
    queue = _mail_queue()
    done.call_on_close(
        (lambda: queue.put(address, lambda: subscribers.confirmation_message(cfg, signup, url)))
        if mail
        else queue.idle
    )
    return done


@bp.get("/c/<token>")
def confirm_page(token: str) -> Response:
    """The confirmation link: a page with the consent statement and a button; changes nothing."""
    p = pages()
    signup = subscribers.read_confirm_token(p.secret, token, p.clock())  # BadToken: 400 page
    html = p.render(
        signup.lang,
        "confirm.html",
        action=f"{p.root}/c/{token}",
        email=signup.email,
        language=links.LANG_NAMES[signup.lang],
        consent=subscribers.consent(p.cfg, signup.lang).text,
    )
    return p.page(html)


@bp.post("/c/<token>")
def confirm(token: str) -> Response:
    """The button: the consent on record, the person on the list, a welcome message."""
    p = pages()
    cfg = p.cfg
    signup = subscribers.read_confirm_token(p.secret, token, p.clock())  # BadToken: 400 page
    wording = subscribers.consent(cfg, signup.lang)
    with p.journal() as j:
        who = subscribers.confirm(j, signup, wording, datetime.fromtimestamp(p.clock(), UTC))
    if who is None:
        return p.notice("not_confirmed", 409, signup.lang)
    if who.new and cfg.subscribe.welcome:
        unsubscribe = links.make_token(p.secret, "unsubscribe", who.public_id, "welcome", who.lang)
        values = {tokens.UNSUBSCRIBE_URL: f"{_base()}/u/{unsubscribe}"}
        _mail_queue().put(who.email, lambda: subscribers.welcome_message(cfg, who, values))
    html = p.render(
        signup.lang,
        "confirmed.html",
        language=links.LANG_NAMES[signup.lang],
        index_url=f"{p.root}/?lang={signup.lang}",
    )
    return p.page(html)


def run_subscribe_form(cfg: Config, lang: str) -> str:
    """`newsletter subscribe-form --lang es`: the form as plain HTML for the organisation's site.

    It posts to `[web] base_url`/s, cross-site: no cookie, no CSRF field (the confirmation email
    and the caps protect it); the page it lands on is the sign-up's "check your email".
    """
    base = links.require_base_url(cfg)
    env = i18n.jinja_env(cfg, lang, domain="web", subdir="web")
    return env.get_template("subscribe_embed.html").render(
        org_name=cfg.org.name,
        email="",
        name="",
        chosen=lang,
        **form_values(cfg, lang, "embed", f"{base}/s"),
    )
