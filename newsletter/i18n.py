"""Translations and the Jinja environments: one environment per language, catalogs checked.

Catalogs live at `locale/<lang>/LC_MESSAGES/<domain>.po`: the site's own (`[paths] locale`), else
the packaged one (resources.py). A site's .po is compiled in memory when loaded, so there is no .mo
file to forget to rebuild; a packaged catalog is read from the .mo built with the wheel (22 ms less
per process). `Translations.load` would fall back silently to untranslated text when a catalog is
missing; here that is an error naming the file. Templates likewise: the site's file, else the
packaged one, file by file (a Jinja search path).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import jinja2
from babel.dates import format_date
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import Translations
from jinja2.bccache import Bucket

from newsletter import resources
from newsletter.config import Config
from newsletter.errors import NewsletterError

LANGUAGES = ("es", "en")
GETTEXT_FUNCS = ("_", "gettext", "ngettext")

# Strings the code (not a template) translates, keyed by what they are for. Listed here so that
# missing_translations covers them too.
EMAIL_STRINGS = {
    "greeting_named": "Dear {name},",
    "greeting_anonymous": "Dear friend,",
    "forward_intro": "I thought you would want to read this alert from %(org)s:",
    "language_subject": "Please send me the emails in %(language)s",
    "unsubscribe_subject": "Unsubscribe me from the %(org)s alerts",
    "subscribe_subject": "Subscribe me to the %(org)s alerts",
    "when": "%(date)s at %(time)s",
    # The sign-up emails (newsletter/subscribers.py).
    "confirm_subject": "Please confirm your subscription to the %(org)s action alerts",
    "welcome_subject": "Welcome to the %(org)s action alerts",
    # Translated with the catalog of the language it offers (the reader who needs it reads that).
    "language_label": "Get emails in this language",
}

# Strings of the web catalog the code (not a template) translates.
WEB_STRINGS = {
    # The sign-up's consent statement: shown on the form and the confirm page, its wording kept
    # with each subscriber's consent (newsletter/subscribers.py). Change it and the version does.
    "consent": (
        "I want to receive the %(org)s action alerts by email. I can cancel my subscription at "
        "any time with the link at the end of every alert."
    ),
}


def catalog_path(cfg: Config, lang: str, domain: str = "messages") -> Path:
    """Where the site's own .po catalog of one language and domain lives (or would live)."""
    return resources.site_folder(cfg, "locale") / lang / "LC_MESSAGES" / f"{domain}.po"


def catalog_source(cfg: Config, lang: str, domain: str = "messages") -> Path:
    """The .po catalog in use: the site's own, else the packaged one."""
    return resources.catalog_file(cfg, lang, domain)


def _stamp(path: Path) -> tuple[str, int, int]:
    """A cache key that changes when the file does (live preview edits catalogs)."""
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=32)
def _load_catalog(key: tuple[str, int, int], lang: str) -> Catalog:
    path = Path(key[0])
    if key[1] < 0:
        raise NewsletterError(
            f"{path}: translation catalog missing. Create it (copy another language's "
            f"{path.name} and translate each msgstr)."
        )
    try:
        with path.open("rb") as fh:
            cat = read_po(fh, locale=lang, abort_invalid=True)
    except PoFileError as err:
        raise NewsletterError(f"{path}: {err}. Fix the .po syntax.") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise NewsletterError(
            f"{path}: cannot read the catalog ({err}). Save it as UTF-8 .po."
        ) from None
    _check_placeholders(path, cat)
    return cat


# %(org)s and {name}: the values the code fills in. A msgstr may leave one out, not invent one.
PLACEHOLDER_RE = re.compile(r"%\((\w+)\)[sd]|\{(\w+)\}")


def _check_placeholders(path: Path, cat: Catalog) -> None:
    """A placeholder in a msgstr that its msgid lacks would fail every render (KeyError)."""
    for msg in cat:
        if not msg.id or msg.fuzzy:
            continue
        ids = msg.id if isinstance(msg.id, tuple) else (msg.id,)
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        known = {m.group(0) for s in ids for m in PLACEHOLDER_RE.finditer(s)}
        for s in strings:
            for m in PLACEHOLDER_RE.finditer(s or ""):
                if m.group(0) not in known:
                    use = ", ".join(sorted(known)) or "none"
                    raise NewsletterError(
                        f"{path}:{msg.lineno}: msgstr {s!r} has {m.group(0)}, which msgid "
                        f"{ids[0]!r} does not. Use the msgid's placeholders as written ({use})."
                    )


def catalog(cfg: Config, lang: str, domain: str = "messages") -> Catalog:
    """The parsed catalog of one language and domain (cached until the file changes)."""
    return _catalog(cfg, lang, domain)[1]


def _catalog(cfg: Config, lang: str, domain: str) -> tuple[tuple[str, int, int], Catalog]:
    """(the file's stamp, its catalog): one stat, so what is cached under a stamp matches it."""
    if lang not in LANGUAGES:
        raise NewsletterError(f"unknown language {lang!r}; use one of {', '.join(LANGUAGES)}.")
    stamp = _stamp(catalog_source(cfg, lang, domain))
    return stamp, _load_catalog(stamp, lang)


def translations(cfg: Config, lang: str, domain: str = "messages") -> Translations:
    """gettext translations compiled in memory from the .po catalog (cached until it changes)."""
    return _translations(cfg, lang, domain)[1]


def _translations(cfg: Config, lang: str, domain: str) -> tuple[tuple[str, int, int], Translations]:
    if lang in LANGUAGES:
        mo = resources.compiled(catalog_source(cfg, lang, domain))
        if mo is not None:
            stamp = _stamp(mo)
            return stamp, _load_mo(stamp, domain)
    stamp, cat = _catalog(cfg, lang, domain)
    return stamp, _compile(stamp, domain, cat)


@lru_cache(maxsize=32)
def _load_mo(key: tuple[str, int, int], domain: str) -> Translations:
    with open(key[0], "rb") as fh:
        return Translations(fp=fh, domain=domain)


@lru_cache(maxsize=32)
def _compile(_key: tuple[str, int, int], domain: str, cat: Catalog) -> Translations:
    buf = io.BytesIO()
    write_mo(buf, cat)
    buf.seek(0)
    return Translations(fp=buf, domain=domain)


_ENVS: dict[tuple[str, str, str, tuple[str, int, int]], jinja2.Environment] = {}


class _SharedCode(jinja2.BytecodeCache):
    """Compiled templates shared by the languages' environments, in memory.

    Every environment of jinja_env is made with the same options, so a template compiles to the
    same code whatever the language (gettext is looked up when it renders): the second language
    loads the first one's code instead of parsing the file again. Jinja keys each entry by the
    template's name and file and checks it against a hash of the source, so an edited template
    (the preview) is compiled again.
    """

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        data = self.code.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)

    def dump_bytecode(self, bucket: Bucket) -> None:
        if len(self.code) > 512:  # bounded: a long preview session renames templates
            self.code.clear()
        self.code[bucket.key] = bucket.bytecode_to_string()


_CODE = _SharedCode()


def jinja_env(
    cfg: Config, lang: str, domain: str = "messages", subdir: str = "email"
) -> jinja2.Environment:
    """The Jinja environment for one language: i18n installed, strict, autoescaped for HTML."""
    stamp, translations_ = _translations(cfg, lang, domain)  # raises first when the catalog is bad
    folders = resources.template_dirs(cfg, subdir)  # the site's, then the packaged: file by file
    key = (tuple(map(str, folders)), lang, domain, stamp)
    env = _ENVS.get(key)
    if env is None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(f) for f in folders]),
            autoescape=jinja2.select_autoescape(["html", "htm", "xml"], default_for_string=True),
            undefined=jinja2.StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            bytecode_cache=_CODE,  # only environments made here, with these very options
        )
        # install_gettext_translations mutates the environment: hence one per language.
        env.install_gettext_translations(translations_, newstyle=True)  # type: ignore[attr-defined]
        env.globals["lang"] = lang
        env.filters["format_date"] = lambda d, fmt="long": format_date(d, fmt, locale=lang)
        if len(_ENVS) > 64:  # bounded: a long preview session edits catalogs many times
            _ENVS.clear()
        _ENVS[key] = env
    return env


def template_msgids(cfg: Config, domain: str = "messages", subdir: str = "email") -> dict[str, str]:
    """Every literal msgid the templates of templates/<subdir> use -> "file:line" of its first use.

    The templates are those that render: the site's own, else the packaged ones. The file is
    relative to the site when it is the site's, else absolute.
    """
    env = jinja2.Environment(extensions=["jinja2.ext.i18n"])
    found: dict[str, str] = {}
    for path in resources.template_files(cfg, subdir).values():
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise NewsletterError(f"{path}: not UTF-8 text. Save it as UTF-8.") from None
        try:
            items = list(env.extract_translations(source, GETTEXT_FUNCS))  # type: ignore[attr-defined]
        except jinja2.TemplateSyntaxError as err:
            raise NewsletterError(
                f"{path}:{err.lineno}: {err.message}. Fix the template."
            ) from None
        for lineno, _func, message in items:
            msgs = message if isinstance(message, tuple) else (message,)
            for msgid in msgs[:1]:  # the singular; ngettext's plural shares its catalog entry
                if isinstance(msgid, str) and msgid not in found:
                    found[msgid] = f"{resources.display(cfg, path)}:{lineno}"
    return found


def missing_translations(
    cfg: Config,
    lang: str,
    domain: str = "messages",
    subdir: str | None = None,
    used_ids: Iterable[str] | None = None,
) -> list[str]:
    """Msgids the templates use that the catalog of `lang` lacks, leaves empty or marks fuzzy.

    `used_ids`: template_msgids(cfg, domain, subdir) when the caller has it already (each
    call parses every template: `check` asks for every language)."""
    subdir = subdir or ("web" if domain == "web" else "email")
    cat = catalog(cfg, lang, domain)
    missing = []
    used = list(template_msgids(cfg, domain, subdir) if used_ids is None else used_ids)
    code_strings = {"messages": EMAIL_STRINGS, "web": WEB_STRINGS}.get(domain, {})
    used += [m for m in code_strings.values() if m not in used]
    for msgid in used:
        msg = cat.get(msgid)
        if msg is None:
            missing.append(msgid)
            continue
        strings = msg.string if isinstance(msg.string, tuple) else (msg.string,)
        # write_mo skips fuzzy entries, so a fuzzy one shows untranslated too.
        if msg.fuzzy or not all(strings):
            missing.append(msgid)
    return sorted(missing)
