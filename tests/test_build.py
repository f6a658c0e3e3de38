"""`newsletter build` and `newsletter new` end to end, through click's runner, in a project folder."""

from __future__ import annotations

import email
import email.policy
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import tokens
from newsletter.cli import cli
from tests.conftest import ALERT_ID, REPO

ALERT = f"alerts/{ALERT_ID}"


@pytest.fixture
def demo(project: Path) -> Path:
    """The project folder as a fresh checkout has it, with the demo newsletter.toml."""
    shutil.copy(REPO / "newsletter.toml", project / "newsletter.toml")
    return project


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_build_writes_every_file_filled(demo: Path) -> None:
    code, out = run("build", ALERT, "--out", "out")
    assert code == 0, out
    out_dir = demo / "out"
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "chicago-protest.ics",
        "en.eml",
        "en.html",
        "en.txt",
        "es.eml",
        "es.html",
        "es.txt",
    ]
    for name in names:
        assert f"wrote out/{name}" in out
    assert "newsletter preview" in out and (out_dir / "es.html").resolve().as_uri() in out
    for lang, greeting in (("es", "Hola, Ana:"), ("en", "Dear Ana,")):
        html = (out_dir / f"{lang}.html").read_text(encoding="utf-8")
        text = (out_dir / f"{lang}.txt").read_text(encoding="utf-8")
        assert tokens.leftover(html) == [] and tokens.leftover(text) == []
        assert greeting in html and greeting in text
        # Without a base URL: forward is a prefilled mailto:, unsubscribe the configured address.
        assert 'href="mailto:?subject=' in html
        assert "mailto:unsubscribe@example.org?subject=" in html
        assert "mailto:language@example.org?subject=" in html
        assert html.startswith("<!DOCTYPE html>") and f'<html lang="{lang}"' in html


def test_build_eml_is_a_complete_multipart_alternative(demo: Path) -> None:
    assert run("build", ALERT, "--out", "out")[0] == 0
    for lang in ("es", "en"):
        msg = email.message_from_bytes(
            (demo / "out" / f"{lang}.eml").read_bytes(), policy=email.policy.default
        )
        assert msg.get_content_type() == "multipart/alternative"
        assert msg["From"] and msg["To"] and msg["Subject"] and msg["Message-ID"]
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert "Comunidades Seguras" in html if lang == "es" else "Secure Communities" in html
        assert tokens.leftover(html) == [] and tokens.leftover(text) == []
        assert "(305) 744-1951" in text


def test_build_ics_file(demo: Path) -> None:
    assert run("build", ALERT, "--out", "out")[0] == 0
    ics = (demo / "out" / "chicago-protest.ics").read_bytes()
    assert ics.startswith(b"BEGIN:VCALENDAR\r\n") and ics.endswith(b"END:VCALENDAR\r\n")
    assert b"DTSTART:20110816T160000Z\r\n" in ics


def test_build_default_folder_and_no_temp_files(demo: Path) -> None:
    code, out = run("build", ALERT)
    assert code == 0, out
    folder = demo / "build" / ALERT_ID
    assert (folder / "es.html").is_file() and (folder / "en.txt").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    # A second build replaces the files in place.
    assert run("build", ALERT)[0] == 0


def test_build_with_base_url_links_to_the_public_pages(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", "https://alerts.example.org")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    assert run("build", ALERT, "--out", "out")[0] == 0
    html = (demo / "out" / "en.html").read_text(encoding="utf-8")
    assert 'href="https://alerts.example.org/u/' in html
    assert 'href="https://alerts.example.org/f/' in html
    assert f'href="https://alerts.example.org/a/{ALERT_ID}/en"' in html
    assert f'href="https://alerts.example.org/a/{ALERT_ID}/chicago-protest.ics"' in html


def test_build_bad_alert_is_one_clear_line(demo: Path) -> None:
    md = demo / ALERT / "en.md"
    md.write_text(md.read_text(encoding="utf-8").replace("::: petition", "::: button"), "utf-8")
    result = CliRunner().invoke(cli, ["build", ALERT, "--out", "out"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "en.md:30: unknown block '::: button'" in lines[0]
    assert "Traceback" not in result.output
    assert not (demo / "out").exists()  # nothing half-written


def test_build_missing_folder(demo: Path) -> None:
    result = CliRunner().invoke(cli, ["build", "alerts/nope"])
    assert result.exit_code == 1 and "no such alert folder" in result.output


def test_new_then_build_shows_the_markers(demo: Path) -> None:
    code, out = run("new", "2026-12-04-next-alert")
    assert code == 0, out
    folder = demo / "alerts" / "2026-12-04-next-alert"
    assert folder.is_dir() and "newsletter check" in out
    code, out = run("build", str(folder), "--out", "next")
    assert code == 0, out
    for lang in ("es", "en"):
        html = (demo / "next" / f"{lang}.html").read_text(encoding="utf-8")
        assert "[[WRITE: " in html
    assert not (demo / "next" / "main.ics").exists()  # no start time yet: no calendar file


def test_new_refuses_existing_and_bad_ids(demo: Path) -> None:
    result = CliRunner().invoke(cli, ["new", ALERT_ID])
    assert result.exit_code == 1 and "already exists" in result.output
    result = CliRunner().invoke(cli, ["new", "Bad Id"])
    assert result.exit_code == 1 and "lowercase letters, digits and hyphens" in result.output


def test_build_into_a_folder_it_cannot_make_is_one_clear_line(demo: Path) -> None:
    (demo / "taken").write_text("a file, not a folder", encoding="utf-8")
    result = CliRunner().invoke(cli, ["build", ALERT, "--out", "taken/out"])
    assert result.exit_code == 1
    assert not isinstance(result.exception, OSError), result.exception  # no traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "taken/out" in lines[0] and "--out" in lines[0], lines


def test_build_outside_the_site_folder_uses_the_packaged_templates(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run from a folder with no newsletter.toml, templates or locale: the packaged ones render it
    (this stopped with "…/locale: no such folder" before); --config reads the site's settings."""
    elsewhere = demo / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(cli, ["build", f"../{ALERT}"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "build" / ALERT_ID / "es.html").is_file()  # [paths] build from the cwd
    code, out = run("--config", "../newsletter.toml", "build", f"../{ALERT}", "--out", "b")
    assert code == 0, out
    assert (elsewhere / "b" / "es.html").is_file()


def test_new_takes_the_date_from_the_id_or_date(demo: Path) -> None:
    """`new 2026-12-04-dream-act` is the alert of 2026-12-04, not of the day it was started."""
    from newsletter import content
    from newsletter.config import load_config

    assert run("new", "2026-12-04-dream-act")[0] == 0
    alert = content.load_alert(load_config(), "alerts/2026-12-04-dream-act")
    assert str(alert.date) == "2026-12-04"
    assert run("new", "dream-act-followup", "--date", "2027-01-15")[0] == 0
    assert str(content.load_alert(load_config(), "alerts/dream-act-followup").date) == "2027-01-15"
    code, out = run("new", "2026-12-05-other", "--date", "2026-12-06")
    assert code == 1 and "differs from the date the id starts with" in out
    code, out = run("new", "2026-13-45-bad")
    assert code == 1 and "not a date" in out


def test_a_new_alerts_copyright_follows_its_year_and_the_org(demo: Path) -> None:
    """The 2011 alert keeps its archived line (in its alert.toml); a new one is its own year's."""
    assert run("new", "2026-12-04-dream-act")[0] == 0
    assert run("build", "alerts/2026-12-04-dream-act", "--out", "new")[0] == 0
    assert run("build", ALERT, "--out", "old")[0] == 0
    for lang in ("es", "en"):
        new = (demo / "new" / f"{lang}.txt").read_text(encoding="utf-8")
        old = (demo / "old" / f"{lang}.txt").read_text(encoding="utf-8")
        assert "© 2026 NALACC" in new and "2009" not in new
        assert "© Copyright 2009 NALACC" in old


def test_events_last_their_end_or_the_stated_default(demo: Path) -> None:
    """Calendar links and the .ics have a length: the alert's end or duration, else 60 minutes."""
    from urllib.parse import parse_qs, urlsplit

    from newsletter import content, render
    from newsletter.config import load_config

    assert content.DEFAULT_EVENT_MINUTES == 60
    assert run("build", ALERT, "--out", "out")[0] == 0
    ics = (demo / "out" / "chicago-protest.ics").read_bytes()
    assert b"DTSTART:20110816T160000Z\r\n" in ics and b"DTEND:20110816T170000Z\r\n" in ics
    cfg = load_config()
    toml = demo / ALERT / "alert.toml"
    toml.write_text(toml.read_text().replace('place = "', 'duration_minutes = 90\nplace = "'))
    alert = content.load_alert(cfg, ALERT)
    url = render.event_view(cfg, alert, alert.events["chicago-protest"], "en").calendar_url
    assert parse_qs(urlsplit(url).query)["dates"] == ["20110816T160000Z/20110816T173000Z"]
    toml.write_text(
        toml.read_text().replace("duration_minutes = 90", "end = 2011-08-16T13:00:00")
    )
    ics = render.event_ics(cfg, content.load_alert(cfg, ALERT), "chicago-protest")
    assert "DTEND:20110816T180000Z\r\n" in ics
    toml.write_text(toml.read_text().replace("end = 2011-08-16T13:00:00", "end = 2011-08-16T10:00:00"))
    code, out = run("build", ALERT)
    assert code == 1 and "end must come after start" in out
