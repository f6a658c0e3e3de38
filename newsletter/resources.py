"""Where templates and catalogs come from: the site's own file, else the packaged one.

A site is the folder of its newsletter.toml. Its `templates/` and `locale/` (`[paths] templates`,
`[paths] locale`) override the packaged defaults file by file: a site that changes only the footer
copies only the footer, and an upgrade of the tool reaches every file the site did not copy.
Neither folder has to exist; a path set in the settings file has to (a typo would otherwise be
ignored in silence).

The packaged defaults sit in the installed package, `newsletter/_data/`, in the repository's
layout (hatch_build.py maps them there when the wheel is built; the catalogs come with compiled
.mo files). A git checkout (an editable install) has no `_data/`: its own folders are the defaults.
Every reader of templates and catalogs (i18n, render, check, preview, web) asks this module.
"""

from __future__ import annotations

import filecmp
import functools
import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from newsletter.config import Config, Paths
from newsletter.errors import NewsletterError

TEMPLATE_SUFFIXES = (".html", ".txt", ".htm", ".xml", ".j2")


@functools.cache
def packaged_root() -> Path:
    """The folder holding the packaged templates/, locale/, alerts/, recipients/, newsletter.toml."""
    data = importlib.resources.files("newsletter") / "_data"
    if data.is_dir():
        return Path(str(data))
    return Path(__file__).resolve().parent.parent  # a checkout: the repository's own folders


def packaged(*parts: str) -> Path:
    """A packaged default file or folder (it may not exist: a name the tool does not ship)."""
    return packaged_root().joinpath(*parts)


def site_folder(cfg: Config, key: str) -> Path:
    """The site's own `templates` or `locale` folder (`[paths] <key>`; it need not exist)."""
    folder = cfg.path(key)
    if getattr(cfg.paths, key) != getattr(Paths, key) and not folder.is_dir():
        raise NewsletterError(
            f"{cfg.source}: [paths] {key} = {getattr(cfg.paths, key)!r}: no such folder "
            f"({folder}). Create it, or remove the key to use the packaged {key} (with the "
            f"site's {key}/ folder, when there is one, over them)."
        )
    return folder


def template_dirs(cfg: Config, subdir: str) -> list[Path]:
    """The Jinja search path for templates/<subdir>: the site's folder first, then the packaged."""
    dirs = [site_folder(cfg, "templates") / subdir, packaged("templates", subdir)]
    if _same(dirs[0], dirs[1]):  # a checkout run as its own site (make demo)
        del dirs[1]
    return dirs


def template_files(cfg: Config, subdir: str) -> dict[str, Path]:
    """Every template under templates/<subdir> that renders, by name -> the file that wins."""
    found: dict[str, Path] = {}
    for folder in template_dirs(cfg, subdir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in TEMPLATE_SUFFIXES:
                found.setdefault(path.relative_to(folder).as_posix(), path)
    return dict(sorted(found.items()))


def catalog_file(cfg: Config, lang: str, domain: str) -> Path:
    """The .po catalog in use: the site's, else the packaged one; the site's path when neither is."""
    rel = (lang, "LC_MESSAGES", f"{domain}.po")
    own = site_folder(cfg, "locale").joinpath(*rel)
    if own.is_file():
        return own
    default = packaged("locale", *rel)
    return default if default.is_file() else own


def compiled(path: Path) -> Path | None:
    """The .mo built with the wheel beside a packaged .po, else None (then the .po is compiled)."""
    mo = path.with_suffix(".mo")
    if is_packaged(path) and mo.is_file():
        return mo
    return None


def is_packaged(path: Path) -> bool:
    """True for a file of the packaged defaults (in a checkout: the repository's own folders)."""
    root = packaged_root()
    return any(
        Path(path).resolve().is_relative_to((root / name).resolve())
        for name in ("templates", "locale")
    )


def watched_folders(cfg: Config) -> list[Path]:
    """Folders whose files change what renders: the site's and the packaged templates and locale."""
    out: list[Path] = []
    for key in ("templates", "locale"):
        for folder in (site_folder(cfg, key), packaged(key)):
            if not any(_same(folder, f) for f in out):
                out.append(folder)
    return out


def display(cfg: Config, path: Path) -> str:
    """A path as the user reads it: relative to the site when inside it, else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(cfg.root.resolve()))
    except ValueError:
        return str(path)


def describe(cfg: Config, path: Path) -> str:
    """`path (site)`, `path (packaged)` or `path (site, same as packaged)`: where a file comes from."""
    if is_packaged(path) and not _inside(path, cfg.root):
        return f"{display(cfg, path)} (packaged)"
    if is_packaged(path):  # a checkout that is its own site
        return f"{display(cfg, path)} (packaged, in this checkout)"
    default = _packaged_twin(cfg, path)
    if default is None:
        return f"{display(cfg, path)} (site, only here)"
    if filecmp.cmp(path, default, shallow=False):
        return f"{display(cfg, path)} (site, same as packaged: delete it to follow upgrades)"
    return f"{display(cfg, path)} (site, overrides {default})"


def sources(cfg: Config, languages: tuple[str, ...] = ("es", "en")) -> list[str]:
    """One line per template and catalog: its name and the file it comes from (check --verbose)."""
    lines = []
    subdirs = {
        d.name
        for root in (site_folder(cfg, "templates"), packaged("templates"))
        if root.is_dir()
        for d in root.iterdir()
        if d.is_dir()
    }
    for subdir in sorted(subdirs):
        for name, path in template_files(cfg, subdir).items():
            lines.append(f"templates/{subdir}/{name}: {describe(cfg, path)}")
    for domain in ("messages", "web"):
        for lang in languages:
            path = catalog_file(cfg, lang, domain)
            where = describe(cfg, path) if path.is_file() else f"{display(cfg, path)} (missing)"
            lines.append(f"locale/{lang}/LC_MESSAGES/{domain}.po: {where}")
    return lines


def overridden(searchpath: Sequence[str], filename: str) -> Path | None:
    """The later file of a Jinja search path that `filename`, in its first folder, overrides."""
    if not filename or len(searchpath) < 2:
        return None
    file = Path(filename).resolve()
    first = Path(searchpath[0]).resolve()
    if not file.is_relative_to(first):
        return None
    for folder in searchpath[1:]:
        twin = Path(folder) / file.relative_to(first)
        if twin.is_file():
            return twin
    return None


def _packaged_twin(cfg: Config, path: Path) -> Path | None:
    """The packaged file a site file overrides, if any."""
    for key in ("templates", "locale"):
        folder = site_folder(cfg, key)
        if _inside(path, folder):
            twin = packaged(key, *Path(path).resolve().relative_to(folder.resolve()).parts)
            return twin if twin.is_file() else None
    return None


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()
