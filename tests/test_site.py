"""A site folder apart from the tool: the site's templates and catalogs over the packaged ones."""

from __future__ import annotations

import re
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


# --- --config before and after the command ------------------------------------------------------


def test_config_is_accepted_after_the_command_too(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`newsletter build … --config FILE` said "No such option: --config" before."""
    elsewhere = site / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    toml = site / "newsletter.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace('build = "build"', 'build = "made"'),
        encoding="utf-8",
    )
    code, out = run("build", f"../{ALERT}", "--config", "../newsletter.toml")
    assert code == 0, out
    assert (site / "made" / ALERT_ID / "es.html").is_file()  # relative to the settings file
    code, out = run(
        "--config", "../newsletter.toml", "recipients", "check", "../recipients/sample.csv"
    )
    assert code == 0, out
    code, out = run("recipients", "check", "../recipients/sample.csv", "--config", "../nope.toml")
    assert code == 1 and "nope.toml: no such config file" in out, out
    # both given: the one after the command wins, as it is read last
    code, out = run(
        "--config", "../nope.toml", "build", f"../{ALERT}", "--config", "../newsletter.toml"
    )
    assert code == 0, out


# --- newsletter init ------------------------------------------------------------------------------


def test_init_makes_a_site_with_every_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re
    import tomllib
    from dataclasses import fields

    from newsletter import config

    monkeypatch.chdir(tmp_path)
    code, out = run("init", "nalacc-alerts")
    assert code == 0, out
    s = tmp_path / "nalacc-alerts"
    assert (s / "alerts").is_dir() and not any((s / "alerts").iterdir())
    assert (s / "recipients" / "sample.csv").read_bytes() == (
        REPO / "recipients" / "sample.csv"
    ).read_bytes()
    assert not (s / "templates").exists() and not (s / "locale").exists()
    assert "newsletter.db" in (s / ".gitignore").read_text(encoding="utf-8")
    text = (s / "newsletter.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for section, cls in config._SECTIONS.items():
        for f in fields(cls):
            key = config._toml_key(f.name)
            assert key in data.get(section, {}) or re.search(
                rf"^#.*\b{re.escape(key)}\b", text, re.M
            ), f"[{section}] {key} is not in the site's newsletter.toml"
    assert "cd nalacc-alerts" in out and "newsletter new" in out


def test_init_example_and_templates_then_again_overwrites_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = run("init", "s", "--example")
    assert code == 0, out
    alert = tmp_path / "s" / ALERT
    assert (alert / "es.md").read_bytes() == (REPO / ALERT / "es.md").read_bytes()
    toml = tmp_path / "s" / "newsletter.toml"
    toml.write_text("# ours\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    (alert / "es.md").write_text("edited", encoding="utf-8")
    code, out = run("init", "s", "--templates", "--example")
    assert code == 0, out
    assert toml.read_text(encoding="utf-8").startswith("# ours\n")
    assert (alert / "es.md").read_text(encoding="utf-8") == "edited"
    assert "Kept 6 files already there" in out, out
    footer = tmp_path / "s" / "templates" / "email" / "footer.html"
    assert (
        footer.read_bytes() == resources.packaged("templates", "email", "footer.html").read_bytes()
    )
    assert (tmp_path / "s" / "locale" / "es" / "LC_MESSAGES" / "web.po").is_file()
    assert not list((tmp_path / "s" / "locale").rglob("*.mo"))
    code, out = run("init", "s/newsletter.toml")
    assert code == 2 and "is a file" in out, out  # click refuses it before init runs


# --- which file each template comes from ----------------------------------------------------------


def test_check_verbose_and_the_preview_page_name_each_templates_file(site: Path) -> None:
    from newsletter.config import load_config
    from newsletter.preview import PreviewServer
    from tests.test_preview import get

    footer = site / "templates" / "email" / "footer.txt"
    footer.parent.mkdir(parents=True)
    footer.write_text("OUR OWN FOOTER {{ org.name }}\n", encoding="utf-8")
    packaged_footer = resources.packaged("templates", "email", "footer.txt")
    code, out = run("check", "--verbose", ALERT)
    lines = out.splitlines()
    assert (
        f"templates/email/footer.txt: templates/email/footer.txt (site, overrides {packaged_footer})"
        in lines
    )
    layout = resources.packaged("templates", "email", "layout.html")
    assert any(x.startswith(f"templates/email/layout.html: {layout} (packaged") for x in lines), out
    assert any(x.startswith("locale/es/LC_MESSAGES/messages.po: ") for x in lines), out
    code, quiet = run("check", ALERT)
    assert "footer.txt" not in quiet
    srv = PreviewServer(load_config(), site / ALERT, port=0).start()
    try:
        _, body = get(srv.url)
    finally:
        srv.stop()
    assert 'id="sources"' in body
    assert (
        f"templates/email/footer.txt: templates/email/footer.txt (site, overrides {packaged_footer})"
        in body
    )


# --- an upgrade: a site made by an older version --------------------------------------------------

NEW_STRING = "New in this version"


@pytest.fixture
def upgraded(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The packaged defaults of a later version: footer.txt shows a string the old catalogs lack."""
    new = tmp_path_factory.mktemp("tool-v2")
    shutil.copytree(REPO / "templates", new / "templates")
    shutil.copytree(REPO / "locale", new / "locale")
    footer = new / "templates" / "email" / "footer.txt"
    footer.write_text(
        footer.read_text(encoding="utf-8") + f'{{{{ _("{NEW_STRING}") }}}}\n', encoding="utf-8"
    )
    for lang, words in (("es", "Nuevo en esta versión"), ("en", NEW_STRING)):
        po = new / "locale" / lang / "LC_MESSAGES" / "messages.po"
        po.write_text(
            po.read_text(encoding="utf-8") + f'\nmsgid "{NEW_STRING}"\nmsgstr "{words}"\n',
            encoding="utf-8",
        )
    monkeypatch.setattr(resources, "packaged_root", lambda: new)
    return new


def _site_files(site: Path) -> dict[str, bytes]:
    made = ("build", "outbox", "newsletter.db")  # what the commands write, by design
    return {
        str(p.relative_to(site)): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file() and not p.relative_to(site).parts[0].startswith(made)
    }


def test_a_site_laid_out_by_an_older_version_keeps_working(site: Path, upgraded: Path) -> None:
    """The repository's old layout: its own full copies of templates/ and locale/."""
    shutil.copytree(REPO / "templates", site / "templates")
    shutil.copytree(REPO / "locale", site / "locale")
    before = _site_files(site)
    code, out = run("check", ALERT)
    assert code == 0, out
    code, out = run("build", ALERT)
    assert code == 0, out
    text = (site / "build" / ALERT_ID / "es.txt").read_text(encoding="utf-8")
    assert "Nuevo en esta versión" not in text  # its own footer, as before the upgrade
    code, out = run("send", ALERT, "--to", "recipients/sample.csv")
    assert code == 0, out
    assert _site_files(site) == before  # the upgrade and the commands changed no file of the site


def test_after_an_upgrade_check_names_what_a_sites_catalog_lacks(
    site: Path, upgraded: Path
) -> None:
    """A site with its own catalogs (and the packaged templates): the new string is an E-I18N."""
    shutil.copytree(REPO / "locale", site / "locale")
    before = _site_files(site)
    code, out = run("check", ALERT)
    assert code == 1
    line = next(x for x in out.splitlines() if NEW_STRING in x and "es translation" in x)
    assert line.startswith("E-I18N") and str(upgraded / "templates/email/footer.txt") in line
    assert line.endswith("Fix: add its msgstr to locale/es/LC_MESSAGES/messages.po"), line
    assert _site_files(site) == before


def test_after_an_upgrade_an_error_in_a_sites_copy_says_it_is_a_copy(
    site: Path, upgraded: Path
) -> None:
    layout = site / "templates" / "email" / "layout.txt"
    layout.parent.mkdir(parents=True)
    layout.write_text("{{ a_name_this_version_no_longer_passes }}\n", encoding="utf-8")
    code, out = run("check", ALERT)
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("E-RENDER"))
    assert f"{layout}:1: 'a_name_this_version_no_longer_passes' is undefined" in line, line
    twin = upgraded / "templates" / "email" / "layout.txt"
    assert f"the site's copy of {twin}" in line and "delete the copy" in line, line


def test_templates_and_catalogs_are_found_through_resources_only() -> None:
    """A module that reads [paths] templates/locale itself would skip the packaged defaults."""
    offenders = [
        f"{py.relative_to(REPO)}:{n}"
        for py in sorted((REPO / "newsletter").rglob("*.py"))
        if py.name != "resources.py"
        for n, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"""path\(\s*["'](templates|locale)["']\s*\)""", line)
    ]
    assert not offenders, f"use newsletter.resources instead: {offenders}"
