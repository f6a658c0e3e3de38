"""Settings: file, environment overrides, and the errors a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import load_config
from newsletter.errors import NewsletterError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "newsletter.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_file_values_and_relative_paths(project: Path) -> None:
    p = write(
        project,
        '[smtp]\nhost = "smtp.example.org"\nport = 465\nsecurity = "ssl"\n'
        '[paths]\nstate = "var/state.db"\n',
    )
    cfg = load_config(p)
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.security) == ("smtp.example.org", 465, "ssl")
    assert cfg.path("state") == project / "var" / "state.db"


def test_environment_overrides_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(project, '[smtp]\nhost = "smtp.example.org"\nconnections = 2\n')
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "relay.example.net")
    monkeypatch.setenv("NEWSLETTER_SMTP_CONNECTIONS", "4")
    cfg = load_config(p)
    assert cfg.smtp.host == "relay.example.net"
    assert cfg.smtp.connections == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[smtp]\npassword = "hunter2"\n', "NEWSLETTER_SMTP_PASSWORD"),
        ('[smtp]\nhots = "x"\n', "unknown key [smtp] hots"),
        ('[smtpp]\nhost = "x"\n', "unknown section [smtpp]"),
        ('[smtp]\nport = "abc"\n', "[smtp] port: expected int"),
        ('[smtp]\nsecurity = "tls"\n', "starttls, ssl, none"),
        ("[smtp]\ntimeout = -1\n", "[smtp] timeout must be more than 0"),
        ("[smtp]\ntimeout = 0\n", "[smtp] timeout must be more than 0"),
        ('[web]\nbase_url = "http://alerts.example.org"\n', "https://"),
        ("[smtp\n", "Fix the TOML syntax"),
    ],
)
def test_bad_settings_name_the_key(project: Path, text: str, expected: str) -> None:
    p = write(project, text)
    with pytest.raises(NewsletterError) as err:
        load_config(p)
    assert expected in err.value.message
    assert "hunter2" not in err.value.message
    assert "\n" not in err.value.message


def test_secret_required_with_a_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(write(project, ""))
    with pytest.raises(NewsletterError, match="NEWSLETTER_SECRET"):
        cfg.require_secret()
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    assert cfg.require_secret() == "s" * 32


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("smtp.example.org", False),
        ("10.0.0.1", False),
    ],
)
def test_loopback_detection(project: Path, host: str, loopback: bool) -> None:
    cfg = load_config(write(project, f'[smtp]\nhost = "{host}"\n'))
    assert cfg.smtp_is_loopback() is loopback
