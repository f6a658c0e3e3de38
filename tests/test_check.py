"""`newsletter check`: each rule on a small edition, then the real alert and a broken fixture alert."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import check, tokens
from newsletter.cli import cli
from newsletter.config import Config
from newsletter.render import Edition
from tests.conftest import ALERT_ID, REPO

ADDRESS = "123 Main St, Chicago, IL 60601"


def edition(lang: str, variant: str, subject: str, preheader: str, html: str, text: str) -> Edition:
    """An Edition with only what the rules look at."""
    return Edition(
        alert_id="test",
        lang=lang,
        variant=variant,
        subject=subject,
        preheader=preheader,
        html=html,
        text=text,
        greeting_named="",
        greeting_anonymous="",
        forward_body="",
        language_subject="",
        unsubscribe_subject="",
    )


GOOD_HTML = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><style>@media (max-width: 620px) {{ .w {{ width: 100% !important; }} }}</style></head>
<body>
<div style="display:none;max-height:0;overflow:hidden">Sign the petition today.</div>
<table class="w" width="600"><tr><td>
<img src="https://nalacc.test/logo.png" alt="NALACC" width="200" style="display:block;max-width:100%;height:auto">
<p>Call <a href="tel:+13057441951">(305) 744-1951</a> or
<a href="mailto:carlos@nalacc.test">carlos@nalacc.test</a>.</p>
<p><a href="https://petition.test/sign">Sign the petition</a></p>
<p>123 Main St<br>Chicago, IL 60601</p>
<p><a href="{tokens.UNSUBSCRIBE_URL}">Unsubscribe</a></p>
</td></tr></table>
</body></html>
"""
GOOD_TEXT = f"""Sign the petition today.
Call (305) 744-1951 or carlos@nalacc.test.
Sign the petition: https://petition.test/sign
123 Main St, Chicago, IL 60601
Unsubscribe: {tokens.UNSUBSCRIBE_URL}
"""


@pytest.fixture
def cfg() -> Config:
    c = Config()
    c.sender.postal_address = ADDRESS
    return c


def ids(cfg: Config, html: str = GOOD_HTML, text: str = GOOD_TEXT, **kw: object) -> set[str]:
    ed = edition(
        "en", "member", "Subject", kw.pop("preheader", "Sign the petition today."), html, text
    )
    unsub = kw.pop("unsubscribe_url", tokens.UNSUBSCRIBE_URL)
    problems = check.check_edition(cfg, ed, unsubscribe_url=unsub, **kw)  # type: ignore[arg-type]
    return {p.id for p in problems}


def test_good_edition_has_no_problem(cfg):
    assert ids(cfg) == set()


def test_filled_good_edition_has_no_problem(cfg):
    url = "https://alerts.test/u/abc"
    html = GOOD_HTML.replace(tokens.UNSUBSCRIBE_URL, url)
    text = GOOD_TEXT.replace(tokens.UNSUBSCRIBE_URL, url)
    assert ids(cfg, html, text, filled=True, unsubscribe_url=url) == set()


def test_size_over_gmail_clip(cfg):
    big = GOOD_HTML.replace("</body>", "<p>" + "x" * (103 * 1024) + "</p></body>")
    ed = edition("en", "member", "S", "Sign the petition today.", big, GOOD_TEXT)
    [p] = [p for p in check.check_edition(cfg, ed) if p.id == "E-SIZE"]
    assert "KB" in p.message and "102" in p.message


def test_size_warning_before_the_limit(cfg):
    html = GOOD_HTML.replace("</body>", "<p>" + "x" * (85 * 1024) + "</p></body>")
    assert ids(cfg, html) == {"W-SIZE"}


def test_image_without_alt(cfg):
    assert ids(cfg, GOOD_HTML.replace(' alt="NALACC"', "")) == {"E-ALT"}


def test_missing_lang_and_wrong_lang(cfg):
    assert ids(cfg, GOOD_HTML.replace(' lang="en"', "")) == {"E-LANG"}
    assert ids(cfg, GOOD_HTML.replace(' lang="en"', ' lang="es"')) == {"E-LANG"}


def test_missing_preheader(cfg):
    assert ids(cfg, preheader="") == {"E-PREHEADER"}
    # the text is set but the layout does not draw it hidden
    assert ids(cfg, GOOD_HTML.replace("display:none;max-height:0;overflow:hidden", "")) == {
        "E-PREHEADER"
    }


def test_missing_postal_address(cfg):
    assert ids(cfg, GOOD_HTML.replace("123 Main St", "")) == {"E-POSTAL"}
    cfg.sender.postal_address = ""
    problems = check.check_edition(
        cfg, edition("en", "member", "S", "Sign the petition today.", GOOD_HTML, GOOD_TEXT)
    )
    assert [p.where for p in problems if p.id == "E-POSTAL"] == [
        "(built-in defaults) [sender] postal_address"
    ]


def test_missing_or_hidden_unsubscribe(cfg):
    assert ids(
        cfg, GOOD_HTML.replace(f'<a href="{tokens.UNSUBSCRIBE_URL}">Unsubscribe</a>', "")
    ) >= {"E-UNSUB"}
    hidden = GOOD_HTML.replace(
        f'<a href="{tokens.UNSUBSCRIBE_URL}">',
        f'<a style="display:none" href="{tokens.UNSUBSCRIBE_URL}">',
    )
    assert ids(cfg, hidden) == {"E-UNSUB"}
    # no base URL and no unsubscribe mailto: the filled link is empty
    assert "E-UNSUB" in ids(cfg, unsubscribe_url="")


def test_relative_and_http_links(cfg):
    rel = GOOD_HTML.replace("https://petition.test/sign", "/sign")
    assert ids(cfg, rel, GOOD_TEXT.replace("https://petition.test/sign", "/sign")) == {
        "E-LINK-RELATIVE"
    }
    http = GOOD_HTML.replace("https://petition.test/sign", "http://petition.test/sign")
    assert ids(cfg, http, GOOD_TEXT.replace("https://", "http://")) == {"E-LINK-HTTP"}
    img = GOOD_HTML.replace("https://nalacc.test/logo.png", "logo.png")
    assert ids(cfg, img) == {"E-LINK-RELATIVE"}


def test_placeholders_and_leftover_jinja(cfg):
    for junk in ("[[WRITE: the headline]]", "{{ alert.headline }}", "{% if x %}"):
        html = GOOD_HTML.replace("<p>Call", f"<p>{junk} Call")
        assert ids(cfg, html) == {"E-PLACEHOLDER"}, junk
        assert ids(cfg, GOOD_HTML, GOOD_TEXT + junk + "\n") == {"E-PLACEHOLDER"}, junk


def test_tokens_unknown_raw_and_unfilled(cfg):
    html = GOOD_HTML.replace("<p>Call", "<p>__NL_NMAE__ Call")
    assert ids(cfg, html) == {"E-TOKEN"}
    # a known token is fine raw, but not once the copy is filled
    html = GOOD_HTML.replace("<p>Call", f"<p>{tokens.NAME} Call")
    assert ids(cfg, html) == set()
    url = "https://alerts.test/u/abc"
    filled_html = html.replace(tokens.UNSUBSCRIBE_URL, url)
    assert ids(
        cfg,
        filled_html,
        GOOD_TEXT.replace(tokens.UNSUBSCRIBE_URL, url),
        filled=True,
        unsubscribe_url=url,
    ) == {"E-TOKEN"}


def test_text_part_missing_a_link(cfg):
    text = GOOD_TEXT.replace("https://petition.test/sign", "")
    problems = [
        p
        for p in check.check_edition(
            cfg, edition("en", "member", "S", "Sign the petition today.", GOOD_HTML, text)
        )
    ]
    assert [p.id for p in problems] == ["E-TEXT-LINK"]
    assert "https://petition.test/sign" in problems[0].message
    # a phone number counts by its digits, a mailto by its address
    assert ids(cfg, GOOD_HTML, GOOD_TEXT.replace("(305) 744-1951", "")) == {"E-TEXT-LINK"}
    assert ids(cfg, GOOD_HTML, GOOD_TEXT.replace("carlos@nalacc.test", "")) == {"E-TEXT-LINK"}


def test_javascript_and_external_css(cfg):
    assert ids(cfg, GOOD_HTML.replace("</head>", "<script>alert(1)</script></head>")) == {"E-JS"}
    assert ids(cfg, GOOD_HTML.replace("<p>Call", '<p onclick="x()">Call')) == {"E-JS"}
    css = GOOD_HTML.replace(
        "</head>", '<link rel="stylesheet" href="https://cdn.test/a.css"></head>'
    )
    assert ids(cfg, css) == {"E-CSS"}
    imp = GOOD_HTML.replace("<style>", "<style>@import url(https://cdn.test/a.css);")
    assert ids(cfg, imp) == {"E-CSS"}


def test_example_values_warn(cfg):
    html = GOOD_HTML.replace("https://petition.test/sign", "https://example.org/petition")
    text = GOOD_TEXT.replace("https://petition.test/sign", "https://example.org/petition")
    assert ids(cfg, html, text) == {"W-EXAMPLE"}
    cfg.sender.postal_address = "EXAMPLE: set [sender] postal_address"
    assert "W-EXAMPLE" in {p.id for p in check.check_config(cfg)}


def test_problem_line_names_id_place_and_fix(cfg):
    ed = edition(
        "en",
        "member",
        "S",
        "Sign the petition today.",
        GOOD_HTML.replace(' alt="NALACC"', ""),
        GOOD_TEXT,
    )
    [p] = check.check_edition(cfg, ed)
    line = p.line()
    assert "E-ALT" in line and "en html:6 <img" in line and "(member)" in line and "Fix:" in line


def test_merge_reports_a_finding_once_with_its_copies():
    a = check.Problem("E-ALT", "es html:7 <img>", "image without alt text", "fix", ("member",))
    b = dataclasses.replace(a, where="es html:9 <img>", variants=("forward",))
    [m] = check.merge([a, b])
    assert m.variants == ("member", "forward")


# --- the whole alert, through the command line ---------------------------------------------------

FIXTURE = REPO / "tests" / "fixtures" / "broken-alert"


def run_check(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", *args])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.output
    return result.exit_code, result.output


def found(output: str) -> set[str]:
    """The ids printed at the start of each problem line."""
    return {
        line.split()[0] for line in output.splitlines() if re.match(r"^[EW]-[A-Z0-9-]+\s", line)
    }


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}: the test's edit no longer applies"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_real_alert_passes_with_only_warnings(demo):
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 0, out
    assert found(out) == {"W-EXAMPLE"}  # the facts the archived copy lost, and demo settings
    assert "0 errors" in out.splitlines()[-1]


def test_broken_fixture_alert_reports_every_problem(demo):
    shutil.copytree(FIXTURE, demo / "alerts" / "broken-alert")
    code, out = run_check("alerts/broken-alert")
    assert code == 1
    assert found(out) >= {
        "E-PLACEHOLDER",  # [[WRITE: …]] in es.md, and {{ nombre }}
        "E-TOKEN",  # __NL_FRIEND_NAME__ is no token of tokens.py
        "E-PREHEADER",  # en.md's preheader is empty
        "E-LINK-HTTP",  # press-release = "http://…"
        "E-LINK-RELATIVE",  # petition = "/petition"
        "W-EXAMPLE",  # facebook = "https://example.org/…"
    }
    assert "alerts/broken-alert/es.md:14: unfinished" in out  # the marker at its file and line
    last = out.strip().splitlines()[-1]
    assert last.startswith("Error: alerts/broken-alert:") and "errors" in last
    assert "Traceback" not in out


def untranslate(po: Path, msgid: str) -> None:
    """Empty one msgstr of a catalog, as a translator who has not got to it yet leaves it."""
    text = po.read_text(encoding="utf-8")
    new, n = re.subn(rf'(msgid "{msgid}"\nmsgstr )".*"', r'\1""', text)
    assert n == 1, f"{msgid!r} not found in {po}"
    po.write_text(new, encoding="utf-8")


def layout(project: Path) -> Path:
    return project / "templates" / "email" / "layout.html"


def footer(project: Path) -> Path:
    return project / "templates" / "email" / "footer.html"


BREAKS = {
    "E-SIZE": lambda p: edit(
        p / "alerts" / ALERT_ID / "en.md",
        "## Take Action NOW!",
        "long words " * 10_000 + "\n\n## Take Action NOW!",
    ),
    "E-ALT": lambda p: edit(
        layout(p),
        '{% include "footer.html" %}',
        '<tr><td><img src="https://nalacc.test/logo.png"></td></tr>\n{% include "footer.html" %}',
    ),
    "E-LANG": lambda p: edit(layout(p), ' lang="{{ lang }}"', ""),
    "E-POSTAL": lambda p: edit(footer(p), '<p class="postal">{{ postal_address }}</p>', ""),
    "E-UNSUB": lambda p: edit(
        footer(p), '<a href="{{ tokens.UNSUBSCRIBE_URL }}">{{ _("Unsubscribe") }}</a>', ""
    ),
    "E-TEXT-LINK": lambda p: edit(
        p / "templates" / "email" / "blocks" / "event.txt", "\n{{ ev.map_url }}", ""
    ),
    "E-JS": lambda p: edit(layout(p), "</head>", "<script>document.title = 1</script></head>"),
    "E-CSS": lambda p: edit(
        layout(p), "</head>", '<link rel="stylesheet" href="https://cdn.test/a.css"></head>'
    ),
    "E-I18N": lambda p: untranslate(
        p / "locale" / "es" / "LC_MESSAGES" / "messages.po", "Unsubscribe"
    ),
}


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_check_catches(demo, rule):
    BREAKS[rule](demo)
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert rule in found(out), out
    assert code == 1
    assert "Fix:" in out


def test_missing_postal_setting_is_named(demo, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SENDER_POSTAL_ADDRESS", "")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1
    assert "[sender] postal_address" in out and "E-POSTAL" in found(out)


def test_no_color_and_one_clear_last_line(demo):
    shutil.copytree(FIXTURE, demo / "alerts" / "broken-alert")
    result = CliRunner().invoke(
        cli, ["check", "alerts/broken-alert"], env={"NO_COLOR": "1"}, color=True
    )
    assert "\x1b[" not in result.output
    result = CliRunner().invoke(cli, ["check", "alerts/broken-alert"], color=True)
    assert "\x1b[31m" in result.output  # errors in red on a terminal


def test_no_unsubscribe_setting_is_named_once_per_edition(demo, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SENDER_UNSUBSCRIBE_MAILTO", "")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("E-")]
    assert len(errors) == 2 and all(line.startswith("E-UNSUB") for line in errors), out
    assert "[web] base_url" in errors[0] and "[sender] unsubscribe_mailto" in errors[0]


def test_local_base_url_warns_and_needs_no_secret(demo, monkeypatch):
    """A test setup on 127.0.0.1 is a warning, not an error; check builds sample tokens itself."""
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", "http://127.0.0.1:8080")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 0, out
    assert "W-LINK-LOCAL" in found(out) and "http://127.0.0.1:8080/u/" in out
    monkeypatch.setenv("NEWSLETTER_WEB_BASE_URL", "https://alerts.nalacc.test")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 0, out
    assert found(out) == {"W-EXAMPLE"}


# What `newsletter new` leaves for the editor to write, with a plausible answer for each.
NEW_ALERT_ANSWERS = {
    '"[[WRITE: date and time as 2026-12-04T18:00:00, without quotes]]"': "2026-12-04T18:00:00",
    "[[WRITE: https://… address of the petition page]]": "https://act.nalacc.org/petition",
    "[[WRITE: https://… address of the press release]]": "https://nalacc.org/press/dream-act",
    "[[WRITE: contact email address]]": "carlos@nalacc.org",
}


def test_new_alert_is_refused_until_every_place_to_write_is_filled(demo):
    """The petition, press-release and contact addresses are the editor's to write, like the text:
    left as they come, `check` refuses (an example.org link would only warn and could be sent)."""
    assert CliRunner().invoke(cli, ["new", "2026-12-04-dream-act"]).exit_code == 0
    folder = demo / "alerts" / "2026-12-04-dream-act"
    code, out = run_check(str(folder))
    assert code == 1
    toml_lines = [line for line in out.splitlines() if f"{folder.name}/alert.toml" in line]
    for what in ("petition page", "press release", "contact email address"):
        assert any(line.startswith("E-PLACEHOLDER") and what in line for line in toml_lines), what
    # A marker in a link is one problem (unfinished), not also a relative link or a text-part gap.
    assert found(out) == {"E-PLACEHOLDER", "W-EXAMPLE"}, out
    for path in folder.iterdir():
        text = path.read_text(encoding="utf-8")
        for mark, answer in NEW_ALERT_ANSWERS.items():
            text = text.replace(mark, answer)
        text = re.sub(r"\[\[WRITE: ([^\]]*)\]\]", lambda m: m.group(1).strip(" .…"), text)
        path.write_text(text, encoding="utf-8")
    code, out = run_check(str(folder))
    assert code == 0, out
    assert not any(
        line.startswith("W-EXAMPLE") and folder.name in line for line in out.splitlines()
    )


def test_problems_of_a_file_are_listed_in_line_order(demo):
    assert CliRunner().invoke(cli, ["new", "next"]).exit_code == 0
    code, out = run_check("alerts/next")
    assert code == 1
    for name in ("alert.toml", "en.md", "es.md"):
        numbers = [int(n) for n in re.findall(rf"^E-\S+\s+alerts/next/{name}:(\d+):", out, re.M)]
        assert len(numbers) >= 5 and numbers == sorted(numbers), (name, numbers)


def test_content_that_cannot_be_read_is_a_problem_with_an_id_and_the_rest_still_listed(demo):
    """An unknown block stops rendering, but check still lists it as E-CONTENT at its line, with
    the [[WRITE: …]] marks and settings, then the summary (not a bare error line)."""
    folder = demo / "alerts" / ALERT_ID
    edit(folder / "en.md", "::: petition", "::: button")
    edit(folder / "es.md", "## ¡Actúe ahora!", "## [[WRITE: título]]")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1
    assert found(out) == {"E-CONTENT", "E-PLACEHOLDER", "W-EXAMPLE"}, out
    content_line = next(line for line in out.splitlines() if line.startswith("E-CONTENT"))
    assert f"alerts/{ALERT_ID}/en.md:" in content_line and "'::: button'" in content_line
    assert "Fix:" in content_line
    assert out.strip().splitlines()[-1].startswith(f"Error: alerts/{ALERT_ID}: 2 errors")


def test_a_broken_catalog_is_a_problem_with_an_id(demo):
    po = demo / "locale" / "es" / "LC_MESSAGES" / "messages.po"
    edit(po, 'msgstr "Hola, {name}:"', 'msgstr "Hola, {nombre}:"')
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1
    assert "E-I18N" in found(out) and "messages.po:" in out and "{nombre}" in out, out
    assert out.strip().splitlines()[-1].startswith(f"Error: alerts/{ALERT_ID}:")


def test_a_template_not_in_utf8_is_a_problem_not_a_traceback(demo):
    with footer(demo).open("ab") as fh:
        fh.write("<p>café</p>\n".encode("latin-1"))
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1
    assert "footer.html: not UTF-8 text" in out and "E-I18N" in found(out), out
    assert out.strip().splitlines()[-1].startswith(f"Error: alerts/{ALERT_ID}:")


def test_the_templates_are_read_for_their_strings_once_per_check(demo, monkeypatch):
    """Every language's catalog is compared with the strings the templates use: those are
    gathered once (each gathering parses every template), and an untranslated one is still
    found in each language that lacks it."""
    from newsletter import i18n

    calls = []
    real = i18n.template_msgids

    def counted(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(i18n, "template_msgids", counted)
    untranslate(demo / "locale" / "es" / "LC_MESSAGES" / "messages.po", "Unsubscribe")
    code, out = run_check(f"alerts/{ALERT_ID}")
    assert code == 1 and '"Unsubscribe" has no es translation' in out, out
    assert "has no en translation" not in out
    assert len(calls) == 1
