"""The preview server over real HTTP on 127.0.0.1: pages, live-reload version, errors, lifecycle."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import preview, resources
from newsletter.config import load_config
from newsletter.contacts import Contacts
from newsletter.errors import NewsletterError
from tests.conftest import ALERT_ID, STARTUP_TIMEOUT, ctrl_c_reaches_children, read_until


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8")


def request(
    url: str, host: str | None = None, method: str = "GET", body: str = "", **headers: str
) -> tuple[int, bytes]:
    """(status, body) over a raw connection, with any Host header (urllib would fix it)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest(
            method, parts.path + (f"?{parts.query}" if parts.query else ""), skip_host=True
        )
        conn.putheader("Host", host if host is not None else parts.netloc)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value)
        data = body.encode()
        if method == "POST":
            conn.putheader("Content-Type", "application/x-www-form-urlencoded")
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data or None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post(url: str, body: str, origin: str | None = None) -> tuple[int, bytes]:
    """A form POST as the preview page's button sends it (Origin: the page's origin)."""
    headers = {} if origin is None else {"Origin": origin.rstrip("/")}
    return request(url, method="POST", body=body, **headers)


def wait_version(srv: preview.PreviewServer, above: int, timeout: float = 30) -> int:
    """The version once the watcher has re-rendered (bounded wait: returns as soon as it has,
    in about POLL_SECONDS plus a render, 0.15-0.4 s here; the bound is for a loaded machine)."""
    return srv.wait_for_change(above, timeout)


def layout_template(project: Path) -> Path:
    """The email's layout template (the one every edition extends or includes first)."""
    candidates = sorted((project / "templates" / "email").rglob("*.html"))
    for name in ("layout.html", "base.html", "email.html"):
        for c in candidates:
            if c.name == name:
                return c
    assert candidates, "no email templates"
    return candidates[0]


def test_index_and_email_pages(preview_server):
    status, body = get(preview_server.url)
    assert status == 200
    assert 'id="desktop"' in body and 'id="phone"' in body and 'id="text"' in body
    assert 'href="?lang=en&amp;variant=member"' in body  # the switch to the other language
    _, html = get(preview_server.url + "email/es.html")
    assert '<html lang="es"' in html
    _, html = get(preview_server.url + "email/en.html")
    assert '<html lang="en"' in html
    _, text = get(preview_server.url + "email/en.txt")
    assert "Take Action NOW!" in text and "<" not in text.split("\n", 1)[0]
    _, body = get(preview_server.url + "?lang=en")
    assert "/email/en.html" in body and "Take Action NOW!" in body  # the text part is on the page


def test_no_other_site_can_frame_the_preview(preview_server):
    # The index has a button that writes to the state file (POST /contacts) and shows members'
    # names: another site could load it in an invisible frame under a decoy and have the editor
    # click it (same Host, same Origin). Only the preview's own page may frame its emails.
    for path in ("", "email/es.html"):
        with urllib.request.urlopen(preview_server.url + path, timeout=10) as r:
            assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
            assert "frame-ancestors 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["Referrer-Policy"] == "same-origin"  # no Referer to other sites


def test_unknown_path_is_404(preview_server):
    with pytest.raises(urllib.error.HTTPError) as err:
        get(preview_server.url + "nope")
    assert err.value.code == 404
    err.value.close()  # the error holds the response's socket


def test_saving_content_bumps_version_and_rerenders(preview_server, project):
    v = preview_server.snapshot.version
    en = project / "alerts" / ALERT_ID / "en.md"
    en.write_text(
        en.read_text(encoding="utf-8").replace("Take Action NOW!", "Act today!"), encoding="utf-8"
    )
    assert wait_version(preview_server, v) > v
    _, text = get(preview_server.url + "email/en.txt")
    assert "Act today!" in text and "Take Action NOW!" not in text


def test_long_poll_returns_on_change(preview_server, project):
    v = preview_server.snapshot.version
    result: dict[str, object] = {}

    def poll() -> None:
        result["reply"] = json.loads(get(preview_server.url + f"events?since={v}", timeout=15)[1])

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # nothing changed yet: the request waits
    os.utime(project / "alerts" / ALERT_ID / "en.md", ns=(0, time.time_ns() + 10**9))
    t.join(timeout=30)  # returns once the watcher re-rendered (under a second when idle)
    assert not t.is_alive()
    assert (
        result["reply"] == {"version": preview_server.snapshot.version}
        and preview_server.snapshot.version > v
    )


def test_template_syntax_error_shown_with_file_and_line_then_recovers(preview_server, project):
    layout = layout_template(project)
    good = layout.read_text(encoding="utf-8")
    lines = good.splitlines(keepends=True)
    lines.insert(2, "{% if %}\n")  # line 3
    v = preview_server.snapshot.version
    layout.write_text("".join(lines), encoding="utf-8")
    v = wait_version(preview_server, v)
    err = preview_server.snapshot.error
    assert err is not None and err.line == 3
    assert err.file == str(layout.relative_to(project))
    _, body = get(preview_server.url)
    assert f"{layout.relative_to(project)}, line 3" in body and 'id="error"' in body
    layout.write_text(good, encoding="utf-8")
    wait_version(preview_server, v)
    assert preview_server.snapshot.error is None
    assert '<html lang="es"' in get(preview_server.url + "email/es.html")[1]


def test_undefined_name_in_a_block_shown_with_its_file_and_line(preview_server, project):
    """A runtime template error (StrictUndefined) names the block template and line, not layout."""
    block = project / "templates" / "email" / "blocks" / "petition.html"
    good = block.read_text(encoding="utf-8")
    v = preview_server.snapshot.version
    block.write_text("{# one #}\n{{ petiton_url }}\n" + good, encoding="utf-8")  # line 2
    v = wait_version(preview_server, v)
    err = preview_server.snapshot.error
    assert err is not None and "petiton_url" in err.message
    assert (err.file, err.line) == (str(block.relative_to(project)), 2)
    _, body = get(preview_server.url)
    assert f"{block.relative_to(project)}, line 2" in body
    block.write_text(good, encoding="utf-8")
    wait_version(preview_server, v)
    assert preview_server.snapshot.error is None


def test_saving_a_catalog_rerenders(preview_server, project):
    """The words of the blocks live in the .po catalogs: saving one shows at once, too."""
    po = project / "locale" / "es" / "LC_MESSAGES" / "messages.po"
    text = po.read_text(encoding="utf-8")
    assert 'msgstr "Firme la petición"' in text
    v = preview_server.snapshot.version
    po.write_text(text.replace('msgstr "Firme la petición"', 'msgstr "Firme aquí"'), "utf-8")
    wait_version(preview_server, v)
    html = get(preview_server.url + "email/es.html")[1]
    assert "Firme aquí" in html  # the button (the preheader keeps its own words)


def test_content_error_shown(preview_server, project):
    toml = project / "alerts" / ALERT_ID / "alert.toml"
    v = preview_server.snapshot.version
    toml.write_text(
        toml.read_text(encoding="utf-8").replace("date = ", "date = 'x' #"), encoding="utf-8"
    )
    wait_version(preview_server, v)
    assert preview_server.snapshot.error is not None
    assert "alert.toml" in str(preview_server.snapshot.error)
    status, body = get(preview_server.url)
    assert status == 200 and "alert.toml" in body


def test_port_in_use_is_one_clear_error(demo):
    cfg = load_config()
    with preview.PreviewServer(cfg, demo / "alerts" / ALERT_ID, port=0) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(NewsletterError, match=f"127.0.0.1:{port} is in use"):
            preview.PreviewServer(cfg, demo / "alerts" / ALERT_ID, port=port)


def test_missing_alert_folder(demo):
    with pytest.raises(NewsletterError, match="no such alert folder"):
        preview.PreviewServer(load_config(), demo / "alerts" / "nope", port=0)


def test_run_preview_opens_the_browser_and_stops_on_ctrl_c(demo, monkeypatch, capsys):
    opened: list[str] = []

    def fake_open(url: str) -> bool:
        opened.append(url)
        assert get(url)[0] == 200  # the server is up when the browser is sent there
        raise KeyboardInterrupt  # the user presses Ctrl-C

    monkeypatch.setattr(preview.webbrowser, "open", fake_open)
    preview.run_preview(load_config(), demo / "alerts" / ALERT_ID, port=0)
    out = capsys.readouterr().out
    assert opened and opened[0] in out and "stopped" in out
    with pytest.raises(OSError):
        get(opened[0], timeout=2)  # the port is released


def test_cli_preview_subprocess_ctrl_c_exits_cleanly(demo):
    with ctrl_c_reaches_children():  # even when the suite runs in the background
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "newsletter",
                "preview",
                f"alerts/{ALERT_ID}",
                "--port",
                "0",  # the kernel's pick, read from the line: no other process can hold it
                "--no-browser",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=demo,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        first = read_until(proc, r"Preview of .* at http://127\.0\.0\.1:\d+/")
        url = re.findall(r"http://127\.0\.0\.1:\d+/", first)[0]
        assert get(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=STARTUP_TIMEOUT)  # bounded; a healthy stop: < 1 s
        out = first + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err


def sigint_blocked(thread: threading.Thread) -> bool:
    """Whether `thread` blocks SIGINT (Linux: its SigBlk mask in /proc)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text(encoding="ascii")
    mask = int(re.findall(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M)[0], 16)
    return bool(mask & (1 << (signal.SIGINT - 1)))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads masks from Linux's /proc")
def test_ctrl_c_can_reach_only_the_main_thread(preview_server, project):
    """Ctrl-C was ignored when a thread of the preview's (one starting for a request) took the
    SIGINT instead of the main thread, which slept on in wait(): 3 of 10 runs hung with
    requests coming in (test_cli_preview_subprocess_ctrl_c_exits_cleanly, once, under load).
    Every thread but the main one must block it, request threads included."""
    v = preview_server.snapshot.version
    before = set(threading.enumerate())
    poll = threading.Thread(target=get, args=(preview_server.url + f"events?since={v}", 30))
    poll.start()  # a long poll: its request thread stays until the next change
    deadline = time.monotonic() + 30
    while not (new := set(threading.enumerate()) - before - {poll}):
        assert time.monotonic() < deadline, "no request thread appeared"
        time.sleep(0.01)
    try:
        for thread in [*preview_server._threads, *new]:
            assert sigint_blocked(thread), thread.name
        assert not sigint_blocked(threading.main_thread())  # put back after the starts
    finally:
        os.utime(project / "alerts" / ALERT_ID / "en.md", ns=(0, time.time_ns() + 10**9))
        poll.join(timeout=30)  # the change ends the long poll


# --- the recipient picker -----------------------------------------------------------------------

PICK_CSV = "email,name,language,city\nlucia@example.org,Lucía Pérez,es,Chicago\nsam@example.com,Sam Lee,en,Boston\n"


@pytest.fixture
def picker(demo: Path) -> Iterator[preview.PreviewServer]:
    csv = demo / "recipients" / "pick.csv"
    csv.parent.mkdir(exist_ok=True)
    csv.write_text(PICK_CSV, encoding="utf-8")
    srv = preview.PreviewServer(
        load_config(), demo / "alerts" / ALERT_ID, port=0, recipients_csv=csv
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_picker_lists_recipients_and_shows_their_copy_in_their_language(picker):
    assert [r.email for r in picker.snapshot.recipients] == ["lucia@example.org", "sam@example.com"]
    _, body = get(picker.url)
    assert 'id="recipient"' in body and "Sam Lee &lt;sam@example.com&gt;" in body
    sam = next(r for r in picker.snapshot.recipients if r.email == "sam@example.com")
    _, body = get(picker.url + f"?r={sam.line}")
    assert (
        f"/email/en.html?v={picker.snapshot.version}&amp;variant=member&amp;r={sam.line}" in body
    )  # Sam reads English
    _, html = get(picker.url + f"email/en.html?r={sam.line}")
    assert "Sam Lee" in html and "Ana García" not in html  # their name, not the sample's
    _, text = get(picker.url + f"email/en.txt?r={sam.line}")
    assert "Sam Lee" in text
    _, html = get(picker.url + "email/es.html")
    assert "Hola, Ana:" in html  # no pick: the sample member of `newsletter build`


def test_picked_copy_links_work_against_serve(demo, monkeypatch):
    """With a base URL and the secret, the links carry tokens of a contact the journal knows."""
    from newsletter import links
    from newsletter.journal import Journal

    secret = "s" * 32
    monkeypatch.setenv("NEWSLETTER_SECRET", secret)
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", "http://127.0.0.1:8080")
    csv = demo / "pick.csv"
    csv.write_text(PICK_CSV, encoding="utf-8")
    cfg = load_config()
    with preview.PreviewServer(cfg, demo / "alerts" / ALERT_ID, port=0, recipients_csv=csv) as srv:
        lucia = srv.snapshot.recipients[0]
        _, page = get(srv.url + f"?r={lucia.line}")
        assert "Lucía Pérez is not in newsletter.db yet" in page  # samples until added
        assert post(srv.url + "contacts", f"r={lucia.line}", origin=srv.url)[0] == 303
        _, html = get(srv.url + f"email/es.html?r={lucia.line}")
    m = re.search(r'href="http://127\.0\.0\.1:8080/u/([^"]+)"', html)
    assert m, "no unsubscribe link to the local serve"
    data = links.read_token(secret, "unsubscribe", m.group(1))
    with Journal(cfg.path("state")) as journal:
        contact = Contacts(journal).find("lucia@example.org")
    assert contact is not None and data.person == contact.public_id and data.lang == "es"


def test_picker_defaults_to_sample_csv_and_rejects_a_missing_one(demo):
    cfg = load_config()
    srv = preview.PreviewServer(cfg, demo / "alerts" / ALERT_ID, port=0)
    try:
        assert srv.recipients_csv == demo / "recipients" / "sample.csv"
        assert srv.snapshot.recipients
    finally:
        srv.stop()
    with pytest.raises(NewsletterError, match="no such recipient CSV"):
        preview.PreviewServer(
            cfg, demo / "alerts" / ALERT_ID, port=0, recipients_csv=demo / "no.csv"
        )


def test_missing_preview_template_falls_back_then_is_one_clear_error(demo, monkeypatch):
    shutil.rmtree(demo / "templates" / "preview")  # the site has none: the packaged page serves
    srv = preview.PreviewServer(load_config(), demo / "alerts" / ALERT_ID, port=0).start()
    try:
        status, body = get(srv.url)
        assert status == 200 and 'id="recipient"' in body
    finally:
        srv.stop()
    monkeypatch.setattr(resources, "packaged_root", lambda: demo / "nothing-packaged")
    with pytest.raises(NewsletterError, match="preview page's template is missing"):
        preview.PreviewServer(load_config(), demo / "alerts" / ALERT_ID, port=0)


def test_friends_copy_and_archive_copy(preview_server):
    _, body = get(preview_server.url + "?lang=en&variant=forward")
    assert 'id="variant-forward" aria-current="page"' in body and 'id="recipient"' not in body
    _, friend = get(preview_server.url + "email/en.html?variant=forward")
    _, member = get(preview_server.url + "email/en.html")
    assert "Ana García forwarded you this alert" in friend
    assert "unsubscribe@example.org" in member and "unsubscribe@example.org" not in friend
    _, archive = get(preview_server.url + "email/en.html?variant=archive")
    assert "Ana García" not in archive and "__NL_" not in archive
    assert '<html lang="en"' in archive


# --- issue 8: only this machine's names; a GET writes nothing -------------------------------------


def test_only_loopback_host_names_are_answered(picker):
    port = urllib.parse.urlsplit(picker.url).port
    sam = picker.snapshot.recipients[1]
    paths = [
        "/",
        f"/?r={sam.line}",
        f"/email/en.html?r={sam.line}",
        "/email/es.txt",
        "/events?since=0",
    ]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        status, body = request(picker.url + f"?r={sam.line}", host=host)
        assert status == 200 and b"Sam Lee" in body, host
    # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    for host in (
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        "evil.example",
        f"127.0.0.1:{port + 1}",
        "localhost",
        "",
    ):
        for path in paths:
            status, body = request(picker.url.rstrip("/") + path, host=host)
            assert (status, body) == (403, b""), (host, path)
    status, body = request(
        picker.url + "contacts",
        host=f"evil.example:{port}",
        method="POST",
        body=f"r={sam.line}",
        Origin=f"http://evil.example:{port}",
    )
    assert (status, body) == (403, b"")


def state_files(state: Path) -> tuple[bytes, int, bytes]:
    """The state file's bytes and modification time, and what its write-ahead log holds (a
    reader may leave an empty one: SQLite makes it to read, nothing is written to it)."""
    wal = state.with_name(state.name + "-wal")
    return state.read_bytes(), state.stat().st_mtime_ns, wal.read_bytes() if wal.exists() else b""


def test_a_get_writes_nothing_to_the_state_file(demo, monkeypatch):
    from newsletter.journal import Journal

    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", "http://127.0.0.1:8080")
    csv = demo / "pick.csv"
    csv.write_text(PICK_CSV, encoding="utf-8")
    cfg = load_config()
    state = cfg.path("state")
    with Journal(state) as j:  # Lucía got an alert; Sam never did
        lucia_id = Contacts(j).public_id(Contacts(j).add("lucia@example.org", "Lucía Pérez"))
    before = state_files(state)
    with preview.PreviewServer(cfg, demo / "alerts" / ALERT_ID, port=0, recipients_csv=csv) as srv:
        lucia, sam = srv.snapshot.recipients
        for who in (lucia, sam):
            for path in (
                f"?r={who.line}",
                f"email/es.html?r={who.line}",
                f"email/en.txt?r={who.line}",
            ):
                assert get(srv.url + path)[0] == 200
        _, lucia_html = get(srv.url + f"email/es.html?r={lucia.line}")
        _, sam_page = get(srv.url + f"?r={sam.line}")
        _, sam_html = get(srv.url + f"email/en.html?r={sam.line}")
        _, sample_html = get(srv.url + "email/en.html")  # nobody picked
    assert state_files(state) == before  # not a byte, not a time stamp
    # Lucía's links work on serve; Sam's are samples, and the page says how to add him.
    assert "http://127.0.0.1:8080/u/" in lucia_html
    from newsletter import links

    token = re.search(r'href="http://127\.0\.0\.1:8080/u/([^"]+)"', lucia_html).group(1)
    assert links.read_token("s" * 32, "unsubscribe", token).person == lucia_id
    def person(html: str) -> str:
        token = re.search(r'href="http://127\.0\.0\.1:8080/u/([^"]+)"', html).group(1)
        return links.read_token("s" * 32, "unsubscribe", token).person

    assert person(sam_html) == person(sample_html) != lucia_id  # the sample member's links
    assert "Sam Lee is not in newsletter.db yet" in sam_page and 'action="/contacts"' in sam_page
    with Journal(state) as j:
        assert Contacts(j).find("sam@example.com") is None


def test_only_the_pages_own_post_adds_a_member(picker, monkeypatch):
    from newsletter.journal import Journal

    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    picker.cfg.web.base_url = "http://127.0.0.1:8080"
    sam = picker.snapshot.recipients[1]
    state = picker.cfg.path("state")
    # Another site's form (its Origin), or no Origin at all: refused, nothing written.
    for origin in ("http://evil.example", None, "null"):
        assert post(picker.url + "contacts", f"r={sam.line}", origin=origin) == (403, b"")
    assert not state.exists()
    status, _ = post(picker.url + "contacts", f"r={sam.line}", origin=picker.url)
    assert status == 303
    with Journal(state) as j:
        assert Contacts(j).find("sam@example.com").name == "Sam Lee"
    _, page = get(picker.url + f"?r={sam.line}")
    assert "is not in newsletter.db yet" not in page  # his own links now
    assert post(picker.url + "contacts", "r=9999", origin=picker.url)[0] == 400
