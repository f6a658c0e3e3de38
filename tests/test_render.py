"""Rendering: translations, Jinja environments, premailer inlining, variants, size."""

from __future__ import annotations

import copy
import re
import shutil
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote

import pytest
from lxml import html as lxml_html

from newsletter import content, i18n, render, resources, tokens
from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError

REPO = Path(__file__).resolve().parent.parent
PO_HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """A project with one template and hand-written catalogs, and no packaged ones behind them."""
    monkeypatch.setattr(resources, "packaged_root", lambda: tmp_path / "nothing-packaged")
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "templates" / "email" / "a.html").write_text(
        '{{ _("Hello") }} {{ _("Bye %(n)s", n=x) }}\n', encoding="utf-8"
    )
    (tmp_path / "templates" / "email" / "a.txt").write_text('{{ _("Plain") }} {{ x }}\n')
    for lang, body in {
        "es": 'msgid "Hello"\nmsgstr "Hola"\n\nmsgid "Plain"\nmsgstr "Llano"\n\n'
        '#, fuzzy\nmsgid "Bye %(n)s"\nmsgstr "Adiós %(n)s"\n',
        "en": 'msgid "Hello"\nmsgstr ""\n',
    }.items():
        d = tmp_path / "locale" / lang / "LC_MESSAGES"
        d.mkdir(parents=True)
        (d / "messages.po").write_text(PO_HEADER + body, encoding="utf-8")
    return Config(root=tmp_path)


def test_jinja_env_translates_and_escapes_html_only(tiny: Config) -> None:
    env = i18n.jinja_env(tiny, "es")
    assert env.get_template("a.html").render(x="<b>") == "Hola Bye &lt;b&gt;\n"
    assert env.get_template("a.txt").render(x="<b>") == "Llano <b>\n"
    assert i18n.jinja_env(tiny, "es") is env  # cached per language


def test_one_environment_per_language(tiny: Config) -> None:
    assert i18n.jinja_env(tiny, "en") is not i18n.jinja_env(tiny, "es")
    assert i18n.jinja_env(tiny, "en").get_template("a.html").render(x="1") == "Hello Bye 1\n"


def test_languages_share_compiled_templates_and_an_edit_compiles_again(
    tiny: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each language has its environment, but a template is parsed once for all of them (the
    check renders every language); an edited template is parsed again, for every language."""
    import os

    import jinja2

    parsed: list[str] = []
    real = jinja2.Environment._parse

    def counted(self, source, name, filename):  # type: ignore[no-untyped-def]
        parsed.append(name)
        return real(self, source, name, filename)

    monkeypatch.setattr(jinja2.Environment, "_parse", counted)
    es, en = (i18n.jinja_env(tiny, lang) for lang in ("es", "en"))
    assert es.get_template("a.html").render(x="1") == "Hola Bye 1\n"
    assert en.get_template("a.html").render(x="1") == "Hello Bye 1\n"
    assert parsed == ["a.html"]
    page = tiny.root / "templates" / "email" / "a.html"
    page.write_text('{{ _("Hello") }}!\n', encoding="utf-8")
    later = page.stat().st_mtime + 10
    os.utime(page, (later, later))
    assert es.get_template("a.html").render() == "Hola!\n"
    assert en.get_template("a.html").render() == "Hello!\n"
    assert parsed == ["a.html", "a.html"]


def test_strict_undefined(tiny: Config) -> None:
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        i18n.jinja_env(tiny, "es").get_template("a.html").render()


def test_missing_translations_lists_absent_empty_and_fuzzy(tiny: Config) -> None:
    code = set(i18n.EMAIL_STRINGS.values())  # the code's own strings count too
    assert sorted(set(i18n.missing_translations(tiny, "es")) - code) == ["Bye %(n)s"]
    assert sorted(set(i18n.missing_translations(tiny, "en")) - code) == [
        "Bye %(n)s",
        "Hello",
        "Plain",
    ]
    assert code <= set(i18n.missing_translations(tiny, "en"))


def test_missing_catalog_is_an_error_naming_the_file(tiny: Config) -> None:
    po = i18n.catalog_path(tiny, "en")
    po.unlink()
    with pytest.raises(
        NewsletterError, match=r"en/LC_MESSAGES/messages\.po: translation catalog missing"
    ):
        i18n.jinja_env(tiny, "en")


def test_broken_catalog_is_an_error_naming_the_file(tiny: Config) -> None:
    po = i18n.catalog_path(tiny, "es")
    po.write_text(PO_HEADER + 'msgid "x"\nmsgstr ""\ngarbage here\n', encoding="utf-8")
    with pytest.raises(NewsletterError, match=r"es/LC_MESSAGES/messages\.po"):
        i18n.jinja_env(tiny, "es")


@pytest.mark.parametrize(
    ("msgid", "msgstr", "says"),
    [
        ("Bye %(n)s", "Adiós %(nombre)s", "%(nombre)s"),
        ("Dear {name},", "Hola, {nombre}:", "{nombre}"),
    ],
)
def test_catalog_placeholder_the_msgid_lacks_is_an_error_at_its_line(
    tiny: Config, msgid: str, msgstr: str, says: str
) -> None:
    """A translator's renamed placeholder would crash rendering (KeyError): name the .po line."""
    po = i18n.catalog_path(tiny, "es")
    po.write_text(
        PO_HEADER + f'msgid "Hello"\nmsgstr "Hola"\n\nmsgid "{msgid}"\nmsgstr "{msgstr}"\n', "utf-8"
    )
    with pytest.raises(NewsletterError) as err:
        i18n.translations(tiny, "es")
    message = err.value.format_message()
    assert f"{po}:8: " in message and says in message and msgid in message, message


def test_catalog_edit_is_picked_up(tiny: Config) -> None:
    assert i18n.jinja_env(tiny, "en").get_template("a.html").render(x="1").startswith("Hello")
    po = i18n.catalog_path(tiny, "en")
    po.write_text(PO_HEADER + 'msgid "Hello"\nmsgstr "Hi there"\n', encoding="utf-8")
    assert i18n.jinja_env(tiny, "en").get_template("a.html").render(x="1").startswith("Hi there")


def test_repo_catalogs_cover_the_email_templates() -> None:
    cfg = Config(root=REPO)
    for lang in ("es", "en"):
        assert i18n.missing_translations(cfg, lang) == [], lang


def test_web_domain_uses_web_templates(tiny: Config) -> None:
    (tiny.root / "templates" / "web").mkdir()
    (tiny.root / "templates" / "web" / "p.html").write_text('{{ _("Unsubscribe") }}')
    shutil.copy(i18n.catalog_path(tiny, "es"), i18n.catalog_path(tiny, "es", "web"))
    # The templates' msgids, and the web strings the code translates (the consent statement).
    assert i18n.missing_translations(tiny, "es", "web") == sorted(
        ["Unsubscribe", i18n.WEB_STRINGS["consent"]]
    )


# --- the rendered alert -------------------------------------------------------------------------

ALERT = REPO / "alerts" / "2011-08-12-secure-communities"
URL_RE = re.compile(r"(?:https?|mailto|tel):[^\s<>\"]+")


@pytest.fixture(scope="module")
def demo() -> Config:
    """The repository's demo settings (no base URL: mailto: fallbacks)."""
    return load_config(REPO / "newsletter.toml")


@pytest.fixture(scope="module")
def alert(demo: Config) -> content.Alert:
    return content.load_alert(demo, ALERT)


@pytest.fixture(scope="module")
def member(demo: Config, alert: content.Alert) -> dict[str, render.Edition]:
    return render.render_editions(demo, alert, "member")


def with_base(cfg: Config) -> Config:
    c = copy.deepcopy(cfg)
    c.web.base_url = "https://alerts.example.org"
    return c


def hrefs(html: str) -> list[str]:
    return [a.get("href") for a in lxml_html.fromstring(html).iter("a")]


def text_urls(text: str) -> set[str]:
    found = {u.rstrip(".,;:") for u in URL_RE.findall(text)} | set(tokens.TOKEN_RE.findall(text))
    return found - {tokens.NAME, tokens.FORWARD_INTRO, tokens.FORWARD_NOTE}  # words, not links


@pytest.mark.parametrize("lang", ["es", "en"])
def test_styles_are_inline_on_the_elements(member: dict[str, render.Edition], lang: str) -> None:
    root = lxml_html.fromstring(member[lang].html)
    button = root.xpath('//a[contains(@class, "button")]')[0]
    assert "background-color:#b3122e" in button.get("style").replace(" ", "")
    assert "font-size:30px" in root.xpath("//h1")[0].get("style").replace(" ", "")
    assert "width:600px" in root.xpath('//table[contains(@class, "container")]')[0].get("style")
    paragraphs = root.xpath('//td[contains(@class, "content")]//p')
    assert paragraphs and all("margin" in (p.get("style") or "") for p in paragraphs)
    # Only what cannot be inlined stays in <style>.
    styles = "".join(s.text for s in root.iter("style"))
    assert ".content p" not in styles.split("@media", 1)[0]


@pytest.mark.parametrize("lang", ["es", "en"])
def test_media_query_survives_with_important(member: dict[str, render.Edition], lang: str) -> None:
    root = lxml_html.fromstring(member[lang].html)
    styles = [s for s in root.iter("style") if s.getparent().tag == "head"]
    css = "".join(s.text for s in styles)
    assert (
        "@media screen and (max-width: 620px)" in css
        or "@media screen and (max-width:620px)" in css
    )
    assert re.search(r"\.container\s*\{[^}]*width:\s*100%\s*!important", css)
    # The classes the media query needs are still on the elements.
    assert root.xpath('//table[contains(@class, "container")]')


def test_member_tokens_survive_inlining_exactly(member: dict[str, render.Edition]) -> None:
    for ed in member.values():
        links = hrefs(ed.html)
        for tok in (tokens.FORWARD_URL, tokens.LANGUAGE_URL, tokens.UNSUBSCRIBE_URL):
            assert tok in links, (ed.lang, tok)
            assert f'href="{tok}"' in ed.html
            # No base URL: the forward link is a mailto: the text part says to use Forward.
            assert (tok in ed.text) == (tok != tokens.FORWARD_URL)
        assert f">{tokens.NAME}<" in ed.html and tokens.NAME in ed.text
        assert tokens.VIEW_URL not in ed.html  # no base URL: no view-in-browser
        assert tokens.FORWARD_INTRO not in ed.html + ed.text
        assert not [t for t in tokens.TOKEN_RE.findall(ed.html) if not t.startswith("__NL_")]


@pytest.mark.parametrize("lang", ["es", "en"])
def test_html_and_text_carry_the_same_links(member: dict[str, render.Edition], lang: str) -> None:
    ed = member[lang]
    html_links = set(hrefs(ed.html))
    assert len(html_links) >= 12
    from_text = text_urls(ed.text)
    for url in html_links - {tokens.FORWARD_URL}:  # the text part: "use Forward" (no base URL)
        if url.startswith("mailto:"):
            assert parseaddr(unquote(url[7:].split("?")[0]))[1] in ed.text, url
        elif url.startswith("tel:"):
            assert url in from_text or url[-10:] in re.sub(r"\D", "", ed.text), url
        else:
            assert url in from_text, url
    for url in from_text:
        assert url in html_links or f"mailto:{url}" in html_links, url


@pytest.mark.parametrize("lang", ["es", "en"])
def test_html_well_under_gmail_clipping(member: dict[str, render.Edition], lang: str) -> None:
    size = len(member[lang].html.encode("utf-8"))
    assert size < 40 * 1024  # Gmail clips at ~102 KB; the alert measured ~13 KB


@pytest.mark.parametrize("lang", ["es", "en"])
def test_safe_html_email_basics(member: dict[str, render.Edition], lang: str) -> None:
    ed = member[lang]
    root = lxml_html.fromstring(ed.html)
    assert root.get("lang") == lang
    pre = root.xpath('//div[contains(@class, "preheader")]')[0]
    assert "display:none" in pre.get("style").replace(" ", "")
    assert pre.text_content().startswith(ed.preheader)
    assert not root.xpath("//script | //link[@rel='stylesheet'] | //*[@onclick] | //*[@onload]")
    assert all(img.get("alt") is not None for img in root.iter("img"))
    for url in hrefs(ed.html):
        assert url.startswith(("https://", "mailto:", "tel:", "__NL_")), url


def test_forward_variant(demo: Config, alert: content.Alert) -> None:
    for ed in render.render_editions(demo, alert, "forward").values():
        both = ed.html + ed.text
        assert tokens.FORWARD_INTRO in ed.html and tokens.FORWARD_NOTE in ed.html
        assert tokens.FORWARD_INTRO in ed.text and tokens.FORWARD_NOTE in ed.text
        for tok in (tokens.UNSUBSCRIBE_URL, tokens.LANGUAGE_URL, tokens.FORWARD_URL, tokens.NAME):
            assert tok not in both, tok
        # An invitation to subscribe instead (a mailto: to the list without [org] subscribe_url).
        assert "mailto:alerts@example.org?subject=" in ed.html
        assert "mailto:alerts@example.org?subject=" in ed.text


def test_forward_variant_uses_subscribe_url(demo: Config, alert: content.Alert) -> None:
    cfg = copy.deepcopy(demo)
    cfg.org.subscribe_url = "https://nalacc.example.org/join"
    ed = render.render_edition(cfg, alert, "es", "forward")
    assert 'href="https://nalacc.example.org/join"' in ed.html
    assert "Suscríbase a las alertas de acción de NALACC" in ed.html


def test_archive_variant_has_no_token_and_no_member_link(
    demo: Config, alert: content.Alert
) -> None:
    for cfg in (demo, with_base(demo)):
        for ed in render.render_editions(cfg, alert, "archive").values():
            assert tokens.TOKEN_RE.findall(ed.html + ed.text) == []
            assert "unsubscribe@example.org" not in ed.html
            assert "language@example.org" not in ed.html
            assert "/u/" not in ed.html and "/f/" not in ed.html


def test_base_url_adds_view_link_and_ics(demo: Config, alert: content.Alert) -> None:
    cfg = with_base(demo)
    ed = render.render_edition(cfg, alert, "en", "member")
    ics = "https://alerts.example.org/a/2011-08-12-secure-communities/chicago-protest.ics"
    assert tokens.VIEW_URL in hrefs(ed.html) and tokens.VIEW_URL in ed.text
    assert ics in hrefs(ed.html) and ics in ed.text
    fwd = render.render_edition(cfg, alert, "en", "forward")
    view = "https://alerts.example.org/a/2011-08-12-secure-communities/en"
    assert view in hrefs(fwd.html) and view in fwd.text


def test_language_link_needs_base_url_or_language_mailto(
    demo: Config, alert: content.Alert
) -> None:
    cfg = copy.deepcopy(demo)
    cfg.sender.language_mailto = ""
    ed = render.render_edition(cfg, alert, "es", "member")
    assert tokens.LANGUAGE_URL not in ed.html + ed.text
    assert "Get emails in English" not in ed.html
    assert tokens.LANGUAGE_URL in render.render_edition(with_base(cfg), alert, "es").html


def test_edition_strings_for_the_message_step(member: dict[str, render.Edition]) -> None:
    es, en = member["es"], member["en"]
    assert es.greeting_named.format(name="Ana") == "Hola, Ana:" and es.greeting_anonymous == "Hola:"
    assert (
        en.greeting_named.format(name="Ana") == "Dear Ana,"
        and en.greeting_anonymous == "Dear friend,"
    )
    assert es.language_subject == "Por favor, envíenme los correos en inglés"
    assert en.language_subject == "Please send me the emails in Spanish"
    assert "NALACC" in es.unsubscribe_subject
    assert es.forward_body.startswith("Pensé que le interesaría leer esta alerta de NALACC:")
    assert es.subject in es.forward_body or es.preheader in es.forward_body
    assert len(es.forward_body) <= render.FORWARD_BODY_MAX and es.forward_body.endswith("\n")
    assert (es.alert_id, es.lang, es.variant) == ("2011-08-12-secure-communities", "es", "member")


def test_event_is_localised_with_map_and_calendar(member: dict[str, render.Edition]) -> None:
    es, en = member["es"], member["en"]
    assert "martes 16 de agosto de 2011 a las 11:00" in " ".join(es.text.split())
    assert "Tuesday, August 16, 2011 at 11:00" in " ".join(en.text.split())
    maps = (
        "https://www.google.com/maps/search/?api=1&query=79%20E.%20Washington%2C%20Chicago%2C%20IL"
    )
    assert maps in hrefs(en.html)
    cal = [u for u in hrefs(en.html) if u.startswith("https://calendar.google.com/")][0]
    # 11 am CDT; the alert gives no end: the stated default length (an hour), not zero.
    assert "dates=20110816T160000Z/20110816T170000Z" in cal
    assert "martes 16 de agosto de 2011 a las 11:00 a. m. (hora del centro)" in " ".join(es.text.split())


def test_ics_is_rfc5545(demo: Config, alert: content.Alert) -> None:
    ics = render.event_ics(demo, alert, "chicago-protest")
    lines = ics.split("\r\n")
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR" and lines[-1] == ""
    assert "\n" not in ics.replace("\r\n", "")
    assert all(len(line.encode("utf-8")) <= 75 for line in lines)
    unfolded = ics.replace("\r\n ", "")
    assert "DTSTART:20110816T160000Z" in unfolded and "DTEND:20110816T170000Z" in unfolded
    assert "LOCATION:Chicago Cultural Center\\, 79 E. Washington\\, Chicago\\, IL" in unfolded
    assert (
        "SUMMARY:Protesta en Chicago: alto a “Comunidades Seguras” / Protest in Chicago" in unfolded
    )


def test_ics_folding_keeps_multibyte_characters_whole() -> None:
    line = "DESCRIPTION:" + "ñ" * 100
    folded = render._fold(line)
    assert all(len(p.encode("utf-8")) <= 75 for p in folded.split("\r\n"))
    assert folded.replace("\r\n ", "") == line


def test_template_error_names_file_and_line(tmp_path: Path, demo: Config) -> None:
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "locale", tmp_path / "locale")
    (tmp_path / "templates" / "email" / "blocks" / "petition.html").write_text(
        "<p>\n{% if x %}\n", encoding="utf-8"
    )
    cfg = Config(root=tmp_path)
    with pytest.raises(NewsletterError, match=r"petition\.html:\d+: .*Fix the template"):
        render.render_edition(cfg, ALERT, "en")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{{ petiton_url }}", "'petiton_url' is undefined"),  # StrictUndefined
        ('{{ "a" + 1 }}', "TypeError: can only concatenate str"),  # any runtime error
    ],
)
def test_runtime_template_error_names_the_block_file_and_line(
    tmp_path: Path, demo: Config, line: str, says: str
) -> None:
    """One clear error at the block's file and line (not layout.html, never a traceback)."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "locale", tmp_path / "locale")
    block = tmp_path / "templates" / "email" / "blocks" / "petition.html"
    block.write_text(f"<p>\n{line}\n" + block.read_text(encoding="utf-8"), "utf-8")
    cfg = Config(root=tmp_path)
    with pytest.raises(NewsletterError, match=rf"blocks/petition\.html:2: {re.escape(says)}"):
        render.render_edition(cfg, ALERT, "en")


def test_unknown_language_is_an_error(demo: Config, alert: content.Alert) -> None:
    with pytest.raises(NewsletterError):
        render.render_edition(demo, alert, "fr")


def test_premailer_runs_once_per_edition(
    demo: Config, alert: content.Alert, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = render.inline

    def counting(html: str) -> str:
        calls.append(len(html))
        return real(html)

    monkeypatch.setattr(render, "inline", counting)
    editions = render.render_editions(demo, alert, "member")
    assert len(calls) == len(editions) == 2


def test_a_style_sheet_read_once_still_styles_each_document_by_its_own_rules() -> None:
    """inline() keeps each style sheet's parsed rules for the next document with the same sheet:
    a document with another sheet gets its own rules, and the same sheet gives what premailer
    alone gives."""
    from premailer import Premailer

    def page(css: str, body: str) -> str:
        return f"<html><head><style>{css}</style></head><body>{body}</body></html>"

    red = "p { color: red } .big { font-size: 30px } @media (max-width: 600px) { p { color: blue !important } }"
    green = "p { color: green }"
    docs = [
        page(red, '<p class="big">a</p>'),
        page(green, "<p>b</p>"),
        page(red, "<p>c</p><div class='big'>d</div>"),
    ]
    plain = [Premailer(d, **render.PREMAILER_OPTIONS).transform() for d in docs]
    inlined = [render.inline(d) for d in docs]
    assert inlined == plain
    assert 'style="color:green"' in inlined[1] and "red" not in inlined[1]
    assert 'style="color:red"' in inlined[2] and "font-size:30px" in inlined[2]
    assert "@media" in inlined[2] and "@media" not in inlined[1]


def test_inlining_never_imports_requests_until_something_uses_it() -> None:
    """premailer imports requests for external style sheets, which inline() never fetches: a
    stand-in saves its import (a third of premailer's) until an attribute is used, and then the
    real module answers. In a fresh interpreter: this one may have imported requests already."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from newsletter import render\n"
        "html = render.inline('<html><head><style>p {color: red}</style></head>"
        "<body><p>x</p></body></html>')\n"
        "assert 'style=\"color:red\"' in html, html\n"
        "assert 'requests' not in sys.modules, 'imported'\n"
        "from requests.exceptions import HTTPError\n"  # the real package, submodules and all
        "import requests\n"
        "assert requests.HTTPError is HTTPError and requests.__version__\n"
        "import premailer.premailer as p\n"
        "assert p.requests.get is requests.get\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_language_link_label_comes_from_the_offered_languages_catalog(
    demo: Config, tmp_path: Path
) -> None:
    """The link offering Spanish is written in Spanish: es/messages.po holds it, a translator edits
    it there, and check's missing-translation rule covers it like every UI string."""
    for name in ("templates", "locale"):
        shutil.copytree(REPO / name, tmp_path / name)
    cfg = copy.deepcopy(demo)
    cfg.root = tmp_path
    alert = content.load_alert(cfg, ALERT)
    po = i18n.catalog_path(cfg, "es")
    text = po.read_text(encoding="utf-8")
    assert text.count('msgstr "Reciba los correos en español"') == 1
    po.write_text(
        text.replace("Reciba los correos en español", "Correos en español, aquí"), "utf-8"
    )
    en = render.render_edition(cfg, alert, "en")
    assert "Correos en español, aquí" in en.html and "Correos en español, aquí:" in en.text
    assert "Reciba los correos" not in en.html
    po.write_text(text.replace('msgstr "Reciba los correos en español"', 'msgstr ""'), "utf-8")
    assert len(i18n.missing_translations(cfg, "es")) == 1


def test_a_premailer_without_the_private_steps_is_used_as_it_is() -> None:
    """inline()'s once-per-sheet reading overrides two private premailer methods; a premailer
    release without them is used plainly (slower, still right) instead of failing every check."""
    from premailer import Premailer

    class Renamed:  # a premailer whose private steps have other names
        pass

    assert render._reading_rules_once(Renamed) is Renamed
    faster = render._reading_rules_once(Premailer)
    assert faster is not Premailer and issubclass(faster, Premailer)
