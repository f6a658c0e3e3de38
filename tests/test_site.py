"""A site folder apart from the tool: the site's templates and catalogs over the packaged ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import i18n, resources
from newsletter.cli import cli
from tests.conftest import ALERT_ID, REPO

ALERT = f"alerts/{ALERT_ID}"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site with settings, the alert and the sample list, and no templates/ or locale/ of its own."""
    shutil.copytree(REPO / ALERT, tmp_path / ALERT)
    shutil.copytree(REPO / "recipients", tmp_path / "recipients")
    shutil.copy(REPO / "newsletter.toml", tmp_path / "newsletter.toml")
    for key in list(__import__("os").environ):
        if key.startswith("NEWSLETTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_a_site_without_templates_builds_with_the_packaged_ones(site: Path) -> None:
    code, out = run("build", ALERT)
    assert code == 0, out
    html = (site / "build" / ALERT_ID / "es.html").read_text(encoding="utf-8")
    assert "Comunidades Seguras" in html
    assert not (site / "templates").exists() and not (site / "locale").exists()


def test_the_sites_footer_overrides_the_packaged_one_and_nothing_else(site: Path) -> None:
    footer = site / "templates" / "email" / "footer.txt"
    footer.parent.mkdir(parents=True)
    footer.write_text("OUR OWN FOOTER {{ org.name }}\n", encoding="utf-8")
    code, out = run("build", ALERT)
    assert code == 0, out
    text = (site / "build" / ALERT_ID / "es.txt").read_text(encoding="utf-8")
    assert "OUR OWN FOOTER NALACC" in text
    html = (site / "build" / ALERT_ID / "es.html").read_text(encoding="utf-8")
    assert "OUR OWN FOOTER" not in html  # footer.html is still the packaged one
    assert html.count("<table") > 3  # and so is the layout


def test_the_sites_catalog_overrides_the_packaged_one_for_its_language(site: Path) -> None:
    packaged = resources.packaged("locale", "es", "LC_MESSAGES", "messages.po")
    po = site / "locale" / "es" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    text = packaged.read_text(encoding="utf-8")
    old = 'msgid "Dear friend,"\nmsgstr "'
    assert old in text
    po.write_text(text.replace(old, old + "¡Hola, amiga! "), encoding="utf-8")
    from newsletter.config import load_config

    cfg = load_config()
    assert i18n.catalog_source(cfg, "es") == po
    assert i18n.catalog_source(cfg, "en") == resources.packaged(
        "locale", "en", "LC_MESSAGES", "messages.po"
    )
    assert i18n.translations(cfg, "es").gettext("Dear friend,").startswith("¡Hola, amiga! ")


def test_a_paths_setting_that_names_no_folder_is_one_clear_error(site: Path) -> None:
    toml = site / "newsletter.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace('templates = "templates"', 'templates = "tmpl"'),
        encoding="utf-8",
    )
    code, out = run("build", ALERT)
    assert code == 1
    assert "[paths] templates = 'tmpl': no such folder" in out and "remove the key" in out, out


def test_a_new_string_in_the_sites_template_names_the_catalog_to_copy(site: Path) -> None:
    footer = site / "templates" / "email" / "footer.txt"
    footer.parent.mkdir(parents=True)
    footer.write_text(
        resources.packaged("templates", "email", "footer.txt").read_text(encoding="utf-8")
        + '{{ _("Our own words") }}\n',
        encoding="utf-8",
    )
    code, out = run("check", ALERT)
    assert code == 1
    line = next(x for x in out.splitlines() if "Our own words" in x and "es translation" in x)
    code_, where = line.split()[:2]
    assert code_ == "E-I18N" and where.startswith("templates/email/footer.txt:"), line
    packaged = resources.packaged("locale", "es", "LC_MESSAGES", "messages.po")
    assert f"copy {packaged} to locale/es/LC_MESSAGES/messages.po and add its msgstr" in line
