"""The public pages in headless Chromium, served by a real werkzeug server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from newsletter import links, web
from newsletter.config import Config, load_config
from tests.conftest import ALERT_ID
from tests.test_web import SECRET, write_config


@dataclass
class Live:
    url: str
    cfg: Config


@pytest.fixture
def live(project, smtp_server, monkeypatch) -> Iterator[Live]:
    """The app in a server thread; [web] base_url points at it, so emails link here."""
    from werkzeug.serving import make_server

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    cfg = load_config(write_config(project, smtp_server.port))
    server = make_server("127.0.0.1", 0, web.create_app(cfg), threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    cfg.web.base_url = url
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Live(url, cfg)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def unlabelled_fields(page) -> list[str]:
    """Names of visible form fields without a <label for> or an enclosing <label>."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, select')]
            .filter(e => e.type !== 'hidden')
            .filter(e => !(e.labels && e.labels.length))
            .map(e => e.name || e.id)"""
    )


def test_bad_token_page_at_375px(live, page):
    page.set_viewport_size({"width": 375, "height": 700})
    resp = page.goto(f"{live.url}/u/not-a-token")
    assert resp is not None and resp.status == 400
    assert page.locator("html").get_attribute("lang") in ("es", "en")
    assert page.get_by_text("This link is not valid").is_visible()
    assert page.get_by_text("Este enlace no es válido").is_visible()
    assert no_horizontal_scroll(page)


def test_language_page_in_the_target_language_at_375px(live, page):
    page.set_viewport_size({"width": 375, "height": 700})
    tok = links.make_token(SECRET, "language", 1, ALERT_ID, "es")
    page.goto(f"{live.url}/l/{tok}")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("button", name="Yes, send them in English").is_visible()
    assert no_horizontal_scroll(page)
    assert unlabelled_fields(page) == []
