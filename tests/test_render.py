"""Rendering: translations, Jinja environments, premailer inlining, variants, size."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from newsletter import i18n
from newsletter.config import Config
from newsletter.errors import NewsletterError

REPO = Path(__file__).resolve().parent.parent
PO_HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'


@pytest.fixture
def tiny(tmp_path: Path) -> Config:
    """A project with one template and hand-written catalogs."""
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


def test_strict_undefined(tiny: Config) -> None:
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        i18n.jinja_env(tiny, "es").get_template("a.html").render()


def test_missing_translations_lists_absent_empty_and_fuzzy(tiny: Config) -> None:
    code = set(i18n.EMAIL_STRINGS.values())  # the code's own strings count too
    assert sorted(set(i18n.missing_translations(tiny, "es")) - code) == ["Bye %(n)s"]
    assert sorted(set(i18n.missing_translations(tiny, "en")) - code) == ["Bye %(n)s", "Hello", "Plain"]
    assert code <= set(i18n.missing_translations(tiny, "en"))


def test_missing_catalog_is_an_error_naming_the_file(tiny: Config) -> None:
    po = i18n.catalog_path(tiny, "en")
    po.unlink()
    with pytest.raises(NewsletterError, match=r"en/LC_MESSAGES/messages\.po: translation catalog missing"):
        i18n.jinja_env(tiny, "en")


def test_broken_catalog_is_an_error_naming_the_file(tiny: Config) -> None:
    po = i18n.catalog_path(tiny, "es")
    po.write_text(PO_HEADER + 'msgid "x"\nmsgstr ""\ngarbage here\n', encoding="utf-8")
    with pytest.raises(NewsletterError, match=r"es/LC_MESSAGES/messages\.po"):
        i18n.jinja_env(tiny, "es")


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
    assert i18n.missing_translations(tiny, "es", "web") == ["Unsubscribe"]
