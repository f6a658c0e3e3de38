"""The command line as a user meets it: `python -m newsletter`, help, and error lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli


def test_python_dash_m_help_in_a_subprocess(project: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "newsletter", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for command in ("build", "check", "preview", "send", "status", "serve", "forward", "new"):
        assert f"  {command} " in out.stdout


def test_bad_config_is_one_line_without_traceback(project: Path) -> None:
    (project / "newsletter.toml").write_text('[smtp]\nsecurity = "tls"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["status", "alerts/x"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("Error: ") and "[smtp] security" in lines[0]
