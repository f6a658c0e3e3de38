"""Images that fit a phone, and editions kept in step: `check` and the rendered email."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from lxml import html as lxml_html

from newsletter import render
from newsletter.config import load_config
from tests.conftest import ALERT_ID
from tests.test_check import edit, found, run_check

ALERT = f"alerts/{ALERT_ID}"
BANNER = "https://img.nalacc.test/rally-1200x300.png"


def png(width: int, height: int) -> bytes:
    """A real PNG file of the given size (one grey colour), without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def add_banner(project: Path, markdown_src: str = "image:rally") -> None:
    """A 1200 × 300 px banner under the opening paragraph of both editions."""
    folder = project / ALERT
    if markdown_src.startswith("image:"):
        edit(
            folder / "alert.toml",
            "[events.chicago-protest]",
            f'[images.rally]\nurl = "{BANNER}"\nwidth = 1200\nheight = 300\n\n'
            "[events.chicago-protest]",
        )
    for lang, alt in (("en", "Marchers in Chicago"), ("es", "Manifestantes en Chicago")):
        edit(
            folder / f"{lang}.md",
            "::: event chicago-protest",
            f"![{alt}]({markdown_src})\n\n::: event chicago-protest",
        )


def test_a_wide_image_is_drawn_email_safe(demo):
    add_banner(demo)
    cfg = load_config()
    for lang, ed in render.render_editions(cfg, demo / ALERT).items():
        (img,) = [i for i in lxml_html.fromstring(ed.html).iter("img") if i.get("src") == BANNER]
        assert img.get("width") == "536"  # the column inside the 600 px container
        style = img.get("style").replace(" ", "")
        for rule in ("max-width:100%", "height:auto", "display:block"):
            assert rule in style, (lang, style)
        assert img.get("alt")
    code, out = run_check(ALERT)
    assert code == 0 and "IMAGE" not in out, out


@pytest.mark.parametrize("lang", ["es", "en"])
@pytest.mark.parametrize("written", ["image:rally", BANNER])
def test_a_wide_image_does_not_scroll_a_phone_sideways(demo, page, lang, written):
    """Chromium at 375 px with the image really loaded (1200 × 300): no horizontal scroll,
    whether the image is a named one (width known) or a bare URL (drawn column-wide)."""
    add_banner(demo, written)
    out = render.run_build(load_config(), demo / ALERT, demo / "build")
    page.route(BANNER, lambda route: route.fulfill(body=png(1200, 300), content_type="image/png"))
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto((out / f"{lang}.html").as_uri())
    page.wait_for_function(
        f"() => [...document.images].some(i => i.src === {BANNER!r} && i.complete "
        "&& i.naturalWidth === 1200)"
    )
    scroll, client = page.evaluate(
        "() => [document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]"
    )
    assert scroll <= client == 375, (scroll, client)
    shown = page.evaluate(
        f"() => [...document.images].find(i => i.src === {BANNER!r}).getBoundingClientRect().width"
    )
    assert 0 < shown <= 375


def test_check_reports_images_without_alt_over_http_or_without_width(demo):
    folder = demo / ALERT
    edit(
        folder / "en.md", "::: event chicago-protest", f"![]({BANNER})\n\n::: event chicago-protest"
    )
    edit(
        folder / "es.md",
        "::: event chicago-protest",
        "![Manifestantes](http://img.nalacc.test/x.png)\n\n::: event chicago-protest",
    )
    code, out = run_check(ALERT)
    assert code == 1
    lines = out.splitlines()
    assert any(x.startswith("E-ALT") and "en.md:16" in x and "no alt text" in x for x in lines), out
    assert any(x.startswith("W-IMAGE-WIDTH") and "en.md:16" in x for x in lines), out
    assert any(x.startswith("E-LINK-HTTP") and "http://img.nalacc.test/x.png" in x for x in lines)


def test_check_reports_a_logo_without_width_and_draws_it_in_the_masthead(demo, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_ORG_LOGO_URL", "https://img.nalacc.test/logo.png")
    code, out = run_check(ALERT)
    assert "W-IMAGE-WIDTH" in found(out) and "[org] logo_width" in out
    monkeypatch.setenv("NEWSLETTER_ORG_LOGO_WIDTH", "1600")
    code, out = run_check(ALERT)
    assert code == 0 and "IMAGE" not in out, out
    ed = render.render_edition(load_config(), demo / ALERT, "es")
    (logo,) = lxml_html.fromstring(ed.html).xpath('//td[contains(@class, "masthead")]//img')
    assert logo.get("alt") == "NALACC" and logo.get("width") == "536"
    assert "max-width:100%" in logo.get("style").replace(" ", "")


def test_editions_out_of_step_are_an_error_naming_what_is_missing_where(demo):
    """Deleting the event and the petition from en.md gave "0 errors": English readers would
    silently lose both."""
    folder = demo / ALERT
    edit(folder / "en.md", "::: event chicago-protest\n", "")
    edit(folder / "en.md", "::: petition\n", "")
    edit(folder / "es.md", "[haga clic aquí](link:press-release)", "haga clic aquí")
    code, out = run_check(ALERT)
    assert code == 1
    lines = [x for x in out.splitlines() if x.startswith("E-EDITIONS")]
    assert len(lines) == 3, out
    assert any(
        "en.md" in x and "::: event chicago-protest is in es.md but not in en.md" in x
        for x in lines
    )
    assert any("::: petition petition is in es.md but not in en.md" in x for x in lines)
    assert any(
        "es.md" in x and "[…](link:press-release) is in en.md but not in es.md" in x for x in lines
    )
