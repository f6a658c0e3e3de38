"""Settings: file, environment overrides, and the errors a user sees."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.config import _SECTIONS, Range, load_config
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
        ('[smtp]\nport = "abc"\n', "[smtp] port must be a whole number from 1 to 65535"),
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


# --- every number checked at load (issue 8) ------------------------------------------------------


def numeric_keys() -> list[tuple[str, str, Range, bool]]:
    """(section, key, range, whole) of every int or float setting."""
    out = []
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            if isinstance(f.default, int | float) and not isinstance(f.default, bool):
                out.append((section, f.name, f.metadata.get("range"), isinstance(f.default, int)))
    return out


def test_every_numeric_setting_declares_its_range() -> None:
    keys = numeric_keys()
    assert {(s, k) for s, k, _, _ in keys} >= {
        ("smtp", "port"),
        ("smtp", "connections"),
        ("smtp", "rate"),
        ("smtp", "timeout"),
        ("smtp", "retries"),
    }
    for section, key, rng, _ in keys:
        assert isinstance(rng, Range), f"[{section}] {key} has no Range: give it one with _num()"
        default = getattr(getattr(load_config(), section), key)
        assert rng.allows(default), f"[{section}] {key}: the default {default} is out of range"


def bad_values(rng: Range, whole: bool) -> list[str]:
    """TOML literals outside `rng`, nan and inf first (each key also gets a bool)."""
    values = ["nan", "inf", "-inf", "true", repr(rng.low - 1), repr(rng.high + 1)]
    if rng.above:
        values.append(repr(rng.low))
    if whole:
        values.append(repr(rng.low + 0.5))
    return values


CASES = [
    (section, key, value)
    for section, key, rng, whole in numeric_keys()
    for value in bad_values(rng, whole)
] + [
    # Those the issue found accepted, or a traceback after planning.
    ("smtp", "timeout", "nan"),
    ("smtp", "timeout", "inf"),
    ("smtp", "rate", "nan"),
    ("smtp", "rate", "inf"),
    ("smtp", "retries", "-1"),
    ("smtp", "port", "-1"),
    ("smtp", "port", "99999"),
    ("smtp", "port", "587.9"),
]


@pytest.mark.parametrize(("section", "key", "value"), CASES)
def test_bad_number_in_the_file_names_key_and_range(
    project: Path, section: str, key: str, value: str
) -> None:
    rng = {(s, k): (r, w) for s, k, r, w in numeric_keys()}[section, key]
    p = write(project, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(NewsletterError) as err:
        load_config(p)
    msg = err.value.message
    assert f"[{section}] {key} must be {rng[0].describe(rng[1])}" in msg, msg
    assert str(p) in msg and "\n" not in msg


@pytest.mark.parametrize(("section", "key", "value"), CASES)
def test_bad_number_in_the_environment_names_variable_key_and_range(
    project: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str, value: str
) -> None:
    rng, whole = {(s, k): (r, w) for s, k, r, w in numeric_keys()}[section, key]
    env = f"NEWSLETTER_{section.upper()}_{key.upper()}"
    monkeypatch.setenv(env, value)
    with pytest.raises(NewsletterError) as err:
        load_config(write(project, ""))
    msg = err.value.message
    assert f"environment {env} ([{section}] {key}) must be {rng.describe(whole)}" in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(("section", "key", "rng", "whole"), numeric_keys())
def test_the_ends_of_each_range_are_accepted(
    project: Path, section: str, key: str, rng: Range, whole: bool
) -> None:
    ends = [rng.high] + ([] if rng.above else [rng.low]) + ([0] if rng.zero else [])
    for end in ends:
        literal = str(int(end)) if whole else repr(float(end))
        cfg = load_config(write(project, f"[{section}]\n{key} = {literal}\n"))
        got = getattr(getattr(cfg, section), key)
        assert got == end and type(got) is (int if whole else float)


def test_a_bad_number_stops_send_before_anything_is_planned(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsletter.cli import cli

    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "nan")
    result = CliRunner().invoke(
        cli,
        ["send", "alerts/2011-08-12-secure-communities", "--to", "recipients/sample.csv", "--yes"],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: environment NEWSLETTER_SMTP_TIMEOUT ([smtp] timeout) must be more than 0 and at "
        "most 3600 seconds (got 'nan'). Fix the value."
    ]
    assert not (project / "newsletter.db").exists() and not (project / "outbox").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--rate", "nan"), ("--rate", "inf"), ("--rate", "-1"), ("--connections", "33")],
)
def test_send_options_that_stand_for_a_setting_obey_its_range(
    project: Path, option: str, value: str
) -> None:
    from newsletter.cli import cli

    args = ["send", "alerts/2011-08-12-secure-communities", "--to", "recipients/sample.csv"]
    result = CliRunner().invoke(cli, [*args, option, value, "--yes"])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': must be" in result.output
    assert f"(got {float(value) if option == '--rate' else int(value)!r})" in result.output
    assert not (project / "newsletter.db").exists()
