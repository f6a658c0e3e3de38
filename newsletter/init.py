"""`newsletter init DIR`: a site folder, apart from the tool, so upgrading the tool touches none of it.

A site holds what the organisation writes and keeps: newsletter.toml (every setting, commented),
alerts/, recipients/, and the state file, build/ and outbox/ the commands make. The templates and
catalogs stay in the installed package until the site wants its own (`--templates` copies them in;
each copy then overrides the packaged file of its name, see resources.py).

init writes only files that are not there yet, each whole (a temporary file renamed into place),
so running it on an existing site adds what is missing (the example, the templates) and never
overwrites an edit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from newsletter import resources
from newsletter.content import current_umask
from newsletter.errors import NewsletterError

EXAMPLE = "alerts/2011-08-12-secure-communities"
# State and output, not the site's sources: the state file names the members, so it should not
# end up in a repository by accident.
GITIGNORE = """\
# Made by `newsletter` commands: the state file (who got what, who unsubscribed) holds members'
# addresses; keep it out of version control and back it up instead.
newsletter.db
newsletter.db-*
newsletter.db.*
build/
outbox/
"""


def site_files(*, example: bool, templates: bool) -> dict[str, Path | str]:
    """What init writes: site-relative path -> packaged file to copy (or the text itself)."""
    files: dict[str, Path | str] = {
        "newsletter.toml": resources.packaged("newsletter.toml"),
        "recipients/sample.csv": resources.packaged("recipients", "sample.csv"),
        ".gitignore": GITIGNORE,
    }
    groups = []
    if example:
        groups.append((resources.packaged(*EXAMPLE.split("/")), EXAMPLE, ("*",)))
    if templates:
        groups.append((resources.packaged("templates"), "templates", resources.TEMPLATE_SUFFIXES))
        groups.append((resources.packaged("locale"), "locale", (".po",)))  # .mo: packaged only
    for src, dest, suffixes in groups:
        if not src.is_dir():
            raise NewsletterError(
                f"{src}: missing from the installed package. Reinstall newsletter."
            )
        for path in sorted(src.rglob("*")):
            if path.is_file() and ("*" in suffixes or path.suffix in suffixes):
                files[f"{dest}/{path.relative_to(src).as_posix()}"] = path
    for src in files.values():
        if isinstance(src, Path) and not src.is_file():
            raise NewsletterError(
                f"{src}: missing from the installed package. Reinstall newsletter."
            )
    return files


def run_init(folder: Path, *, example: bool = False, templates: bool = False) -> list[Path]:
    """Create the site's missing files under `folder`; print what was made and what was kept."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NewsletterError(f"{folder}: is a file. Give a folder for the site.")
    files = site_files(example=example, templates=templates)
    made: list[Path] = []
    kept: list[str] = []
    try:
        (folder / "alerts").mkdir(parents=True, exist_ok=True)
        for rel, src in files.items():
            dest = folder / rel
            if dest.exists():
                kept.append(rel)
                continue
            data = src.read_bytes() if isinstance(src, Path) else src.encode("utf-8")
            _write_new(dest, data)
            made.append(dest)
    except OSError as err:
        raise NewsletterError(
            f"{err.filename or folder}: cannot write ({err.strerror}). Pick a folder you can "
            "write to; what was written so far is complete and stays."
        ) from None
    click.echo(f"Site {folder}/: {len(made)} file{'s' * (len(made) != 1)} written.")
    if kept:
        click.echo(f"Kept {len(kept)} file{'s' * (len(kept) != 1)} already there: {_few(kept)}")
    if templates:
        click.echo(
            "templates/ and locale/ hold copies of the defaults: each file there overrides the "
            "packaged one. Delete the ones you do not change, so that upgrades reach them."
        )
    click.echo("Next:")
    if folder.resolve() != Path.cwd().resolve():
        click.echo(f"  cd {folder}")
    click.echo("  edit newsletter.toml ([sender], [org]; `newsletter check` names what is missing)")
    if example:
        click.echo(f"  newsletter check {EXAMPLE}")
    click.echo("  newsletter new 2026-12-04-dream-act")
    return made


def _write_new(dest: Path, data: bytes) -> None:
    """Write a file that did not exist, whole or not at all; never replace one made meanwhile."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # as a plain open() would (mkstemp: 0600)
        os.link(tmp, dest)  # fails if dest appeared since the check: nothing is overwritten
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
