"""Real Chromium: the built email's layout at phone and desktop widths, and the live preview page."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter import render
from newsletter.config import load_config
from tests.conftest import ALERT_ID

# The email's outer content table: the 600 px column every block sits in.
# How long a live reload may take to show (ms): the watcher's poll, a render, the page's
# reload; about a second idle. A bound, not a pause: the waits return when the text shows.
LIVE_RELOAD_MS = 20_000

MAIN_TABLE_JS = """() => {
  const tables = [...document.querySelectorAll('body table')];
  const t = tables.find((t) => t.getAttribute('width') === '600') ||
            tables.find((t) => /(^|;)\\s*(max-)?width:\\s*600px/.test(t.getAttribute('style') || ''));
  return t ? t.getBoundingClientRect().width : null;
}"""
NO_HSCROLL_JS = (
    "() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
)


@pytest.fixture
def built(demo: Path) -> Path:
    """`newsletter build` output for the real alert, in the project's temp folder."""
    cfg = load_config()
    return render.run_build(cfg, demo / "alerts" / ALERT_ID, demo / "build")


@pytest.mark.parametrize("lang", ["es", "en"])
def test_phone_width_has_no_horizontal_scroll(page, built, lang):
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto((built / f"{lang}.html").as_uri())
    scroll, client = page.evaluate(NO_HSCROLL_JS)
    assert client == 375
    assert scroll <= client, f"{lang}.html scrolls sideways at 375 px ({scroll} > {client})"
    assert page.evaluate("() => document.documentElement.lang") == lang


@pytest.mark.parametrize("lang", ["es", "en"])
def test_desktop_width_shows_the_600px_layout(page, built, lang):
    page.set_viewport_size({"width": 800, "height": 800})
    page.goto((built / f"{lang}.html").as_uri())
    assert page.evaluate(MAIN_TABLE_JS) == 600
    # and on a phone the same table reflows to the screen (the media query survived inlining)
    page.set_viewport_size({"width": 375, "height": 800})
    assert page.evaluate(MAIN_TABLE_JS) <= 375


# --- the preview page ---------------------------------------------------------------------------


def frame_lang(page: object, frame_id: str) -> str:
    frame = page.frame_locator(f"#{frame_id}")  # type: ignore[attr-defined]
    return frame.locator("html").get_attribute("lang")


def test_preview_loads_and_switches_language(page, preview_server):
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(preview_server.url)
    assert frame_lang(page, "desktop") == "es"  # the default language first
    assert frame_lang(page, "phone") == "es"
    assert page.locator("#phone").evaluate("f => f.clientWidth") == 375  # the phone viewport
    assert page.locator("#desktop").evaluate("f => f.clientWidth") >= 600
    assert page.locator("#text").inner_text().strip()
    page.click("#lang-en")
    page.wait_for_url("**/?lang=en&variant=member")
    assert frame_lang(page, "desktop") == "en"
    assert frame_lang(page, "phone") == "en"
    assert "Take Action NOW!" in page.locator("#text").inner_text()


def test_preview_page_has_no_horizontal_scroll(page, preview_server):
    """The plain-text part's long mailto: URLs wrap inside its box instead of widening the page."""
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(preview_server.url)
    assert "mailto:" in page.locator("#text").inner_text()  # the long unbroken lines are there
    scroll, client = page.evaluate(NO_HSCROLL_JS)
    assert scroll <= client, f"the preview page scrolls sideways at 1280 px ({scroll} > {client})"


def test_preview_reloads_after_content_change(page, preview_server, project):
    page.goto(preview_server.url + "?lang=en")
    frame = page.frame_locator("#desktop")
    frame.locator("text=Take Action NOW!").first.wait_for()
    en = project / "alerts" / ALERT_ID / "en.md"
    en.write_text(
        en.read_text(encoding="utf-8").replace("Take Action NOW!", "Act before Tuesday!"),
        encoding="utf-8",
    )
    # within a second or so; the bound is generous for a loaded CI machine (it costs nothing
    # when the page reloads in time)
    page.frame_locator("#desktop").locator("text=Act before Tuesday!").first.wait_for(timeout=LIVE_RELOAD_MS)
    assert "Act before Tuesday!" in page.locator("#text").inner_text()
    assert page.url.endswith("?lang=en")  # the reload keeps the language


def test_preview_shows_template_error_and_recovers(page, preview_server, project):
    layout = project / "templates" / "email" / render.LAYOUT_HTML
    good = layout.read_text(encoding="utf-8")
    page.goto(preview_server.url)
    page.locator("#desktop").wait_for()
    lines = good.splitlines(keepends=True)
    lines.insert(4, "{% if %}\n")  # line 5
    layout.write_text("".join(lines), encoding="utf-8")
    error = page.locator("#error")
    error.wait_for(timeout=LIVE_RELOAD_MS)
    assert f"templates/email/{render.LAYOUT_HTML}, line 5" in error.inner_text()
    assert page.locator("#error .here").inner_text() == "{% if %}"  # the line itself, marked
    page.screenshot(path=str(project / "preview-error.png"))
    layout.write_text(good, encoding="utf-8")
    page.locator("#desktop").wait_for(timeout=LIVE_RELOAD_MS)
    assert frame_lang(page, "desktop") == "es"
    assert page.locator("#error").count() == 0


def test_preview_recipient_picker(page, preview_server):
    page.goto(preview_server.url)
    person = next(r for r in preview_server.snapshot.recipients if r.language == "en" and r.name)
    page.select_option("#recipient", str(person.line))
    page.wait_for_url(f"**/?r={person.line}")
    assert frame_lang(page, "desktop") == "en"  # the language they get
    called = person.fields.get("first_name") or person.name  # [greeting] name: "{first_name}"
    greeting = page.frame_locator("#desktop").locator(f"text={called}").first
    greeting.wait_for()
    assert called in page.locator("#text").inner_text()
