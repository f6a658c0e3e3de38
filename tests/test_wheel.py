"""The tool as a user installs it: the wheel, in a fresh virtual environment outside the repository.

Built from this checkout with hatchling's PEP 517 hook (what `pip wheel .` calls), installed by pip
into a new venv in a temporary folder, and run as a new user would, from a site folder that `init`
makes: init → new (the test writes the blanks) → check → build → send to the outbox → serve.

What is real: the wheel, pip's install of it (console script, package data), the commands, the site
folder, the HTTP server. What is borrowed to keep this fast and offline: the dependencies (jinja2,
premailer, flask…) come from the test's own environment, added to the new venv's sys.path as a
plain path (a .pth line), so the editable install of this checkout that lives there is not
imported: the test asserts that `newsletter` and its templates are the venv's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, read_until, stop

ALERT_ID = "2026-12-04-dream-act"
HEADLINE = "¡Aprueben el DREAM Act ya!"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, hatchling.build as b; print(b.build_wheel(sys.argv[1]))",
            str(dist),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return dist / out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed by pip; returns its bin/ folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return env_dir / "bin"


def test_the_wheel_carries_the_defaults(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "newsletter/_data/newsletter.toml",
        "newsletter/_data/recipients/sample.csv",
        "newsletter/_data/templates/email/layout.html",
        "newsletter/_data/templates/preview/index.html",
        "newsletter/_data/templates/web/base.html",
        "newsletter/_data/locale/es/LC_MESSAGES/messages.po",
        "newsletter/_data/locale/es/LC_MESSAGES/messages.mo",
        "newsletter/_data/locale/en/LC_MESSAGES/web.mo",
        "newsletter/_data/alerts/2011-08-12-secure-communities/alert.toml",
    ):
        assert name in names, name
    assert not any(n.startswith(("tests/", "newsletter/_data/alerts/2026")) for n in names)


def test_a_new_user_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "PYTHON"))}
    env["PATH"] = f"{installed}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    home = tmp_path / "home"
    home.mkdir()

    def newsletter(*args: str, cwd: Path, code: int = 0) -> str:
        out = subprocess.run(
            ["newsletter", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert out.returncode == code, f"newsletter {' '.join(args)}:\n{out.stdout}{out.stderr}"
        return out.stdout + out.stderr

    # the installed package is the venv's, and reads its templates from the venv
    where = subprocess.run(
        [
            installed / "python",
            "-c",
            "import newsletter, newsletter.resources as r; print(newsletter.__file__); "
            "print(r.packaged_root()); print(r.compiled(r.packaged('locale/es/LC_MESSAGES/messages.po')))",
        ],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    venv_dir = installed.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(venv_dir) for p in where), where
    assert where[2].endswith("messages.mo")

    newsletter("init", "nalacc-alerts", cwd=home)
    site = home / "nalacc-alerts"
    assert sorted(p.name for p in site.iterdir()) == [
        ".gitignore",
        "alerts",
        "newsletter.toml",
        "recipients",
    ]
    toml = site / "newsletter.toml"
    toml.write_text(
        re.sub(
            r"(?m)^postal_address = .*$",
            'postal_address = "100 Main St, Chicago, IL 60601"',
            toml.read_text(encoding="utf-8"),
        ),
        encoding="utf-8",
    )

    newsletter("new", ALERT_ID, cwd=site)
    alert = site / "alerts" / ALERT_ID
    fill_the_blanks(alert)

    out = newsletter("check", f"alerts/{ALERT_ID}", cwd=site)
    assert "0 errors" in out, out
    out = newsletter("check", "--verbose", f"alerts/{ALERT_ID}", cwd=site)
    layout = f"templates/email/layout.html: {venv_dir}"
    assert any(
        line.startswith(layout) and line.endswith("(packaged)") for line in out.splitlines()
    ), out

    newsletter("build", f"alerts/{ALERT_ID}", cwd=site)
    html = (site / "build" / ALERT_ID / "es.html").read_text(encoding="utf-8")
    assert HEADLINE in html and "[[WRITE" not in html

    out = newsletter("send", f"alerts/{ALERT_ID}", "--to", "recipients/sample.csv", cwd=site)
    emls = list((site / "outbox" / ALERT_ID).glob("*.eml"))
    sample = (site / "recipients" / "sample.csv").read_text(encoding="utf-8")
    assert len(emls) == len(re.findall(r"@", sample)) > 0, out

    env["NEWSLETTER_SECRET"] = "a-test-secret-of-32-characters-x"
    server = subprocess.Popen(
        ["newsletter", "serve", "--port", "0"],  # the port it got is on its start line
        cwd=site,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        started = read_until(server, r"Serving the public pages on http://127\.0\.0\.1:\d+/")
        port = int(re.findall(r"on http://127\.0\.0\.1:(\d+)/", started)[0])
        # It listens before it prints that line: the first request is answered.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/a/{ALERT_ID}/es", timeout=30) as r:
            assert r.status == 200
            body = r.read().decode("utf-8")
        assert HEADLINE in body, body[:500] or "no answer"
    finally:
        stop(server)
    assert not (REPO / "outbox" / ALERT_ID).exists() and not (REPO / "alerts" / ALERT_ID).exists()


def fill_the_blanks(alert: Path) -> None:
    """Write what an editor would: every [[WRITE: …]] of the new alert, values of our own."""
    toml = alert / "alert.toml"
    text = toml.read_text(encoding="utf-8")
    values = {
        "petition": '"https://nalacc.test/peticion"',
        "press-release": '"https://nalacc.test/comunicado"',
        "start": "2026-12-05T18:00:00",
        "place": '"Casa Michoacán"',
        "address": '"1638 S Blue Island Ave, Chicago, IL"',
        "name": '"Ana García"',
        "phone": '"312-555-0100"',
        "email": '"ana@nalacc.test"',
    }
    for key, value in values.items():
        text = re.sub(
            rf'(?m)^{re.escape(key)} = "\[\[WRITE: [^\]]*\]\]"$', f"{key} = {value}", text
        )
    assert "[[WRITE" not in text, text
    toml.write_text(text, encoding="utf-8")
    for lang in ("es", "en"):
        md = alert / f"{lang}.md"
        text = md.read_text(encoding="utf-8")
        text = re.sub(r'headline = "\[\[WRITE: [^\]]*\]\]"', f'headline = "{HEADLINE}"', text)
        parts = re.split(r"\[\[WRITE: [^\]]*\]\]", text)
        text = "".join(f"{part}Texto {i}" for i, part in enumerate(parts[:-1], 1)) + parts[-1]
        md.write_text(text, encoding="utf-8")
