"""Settings: `newsletter.toml` (working directory or --config), each key overridable by environment.

`[smtp] host` is read from `NEWSLETTER_SMTP_HOST`, and so on: NEWSLETTER_<SECTION>_<KEY>.
Secrets never live in the file: the SMTP password comes from NEWSLETTER_SMTP_PASSWORD (or the
keyring), the token secret from NEWSLETTER_SECRET.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from newsletter.errors import NewsletterError

CONFIG_NAME = "newsletter.toml"
ENV_PREFIX = "NEWSLETTER_"
PASSWORD_ENV = "NEWSLETTER_SMTP_PASSWORD"
SECRET_ENV = "NEWSLETTER_SECRET"
SECURITY_MODES = ("starttls", "ssl", "none")


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; every int or float key declares one (`_num`).

    Checked when the settings are read, so nan, inf, a port of 99999 or a negative retry count
    stop every command with one line naming the key, before anything is planned or sent.
    """

    low: float
    high: float
    unit: str = ""
    above: bool = False  # `low` itself is not allowed (a timeout of 0 means "never wait")
    zero: str = ""  # 0 is allowed too, meaning this (a rate of 0: no cap)

    def allows(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        if not math.isfinite(value):
            return False
        return (value > self.low if self.above else value >= self.low) and value <= self.high

    def describe(self, whole: bool) -> str:
        """E.g. "a whole number from 1 to 65535", "0 (no cap) or from 0.001 to 100000"."""
        low, high = f"{self.low:g}", f"{self.high:g}{self.unit}"
        span = f"more than {low} and at most {high}" if self.above else f"from {low} to {high}"
        if self.zero:
            return f"0 ({self.zero}) or {span}"
        return f"a whole number {span}" if whole else span


def _num(default: float, low: float, high: float, **kw: str | bool) -> Any:
    """A numeric setting's field: its default and its allowed Range."""
    return field(default=default, metadata={"range": Range(low, high, **kw)})  # type: ignore[arg-type]


@dataclass
class Sender:
    # `from` is a Python keyword; the TOML key stays `from`.
    from_: str = "NALACC <alerts@example.org>"
    reply_to: str = ""
    postal_address: str = ""
    list_id: str = ""
    unsubscribe_mailto: str = ""
    language_mailto: str = ""


@dataclass
class _Server:
    """What [smtp] and each [[smtp.relay]] say about one relay."""

    host: str = ""
    port: int = _num(587, 1, 65535)
    security: str = "starttls"
    username: str = ""
    connections: int = _num(1, 1, 32)
    # Below a message every 1,000 s a cap means nothing; above 100,000 a second no relay keeps up.
    rate: float = _num(0.0, 0.001, 100_000, unit=" messages a second", zero="no cap")


@dataclass
class Smtp(_Server):
    # The socket's timeout: 0 would mean non-blocking, and beyond an hour a send looks hung.
    timeout: float = _num(30.0, 0, 3600, unit=" seconds", above=True)
    retries: int = _num(5, 0, 100)
    # [[smtp.relay]] entries: when any, they replace host/port/security/username/connections.
    relay: list[Relay] = field(default_factory=list)


@dataclass
class Relay(_Server):
    """One relay of a pool (`[[smtp.relay]]`): its own connections, rate cap and share."""

    name: str = ""
    # Its share of the messages: weight / the sum of the relays' weights.
    weight: float = _num(1.0, 0, 1_000_000, above=True)

    @property
    def password_env(self) -> str:
        """NEWSLETTER_SMTP_PASSWORD_<NAME>: the name upper-cased, other than A-Z0-9 as _."""
        return PASSWORD_ENV + "_" + "".join(c if c.isalnum() else "_" for c in self.name.upper())


@dataclass
class Web:
    base_url: str = ""


@dataclass
class Paths:
    state: str = "newsletter.db"
    outbox: str = "outbox"
    build: str = "build"
    templates: str = "templates"
    locale: str = "locale"
    alerts: str = "alerts"


@dataclass
class Defaults:
    language: str = "es"


@dataclass
class Dkim:
    selector: str = ""
    domain: str = ""
    key_file: str = ""


@dataclass
class Org:
    name: str = "NALACC"
    website: str = ""
    facebook_url: str = ""
    subscribe_url: str = ""
    copyright: str = ""
    # The masthead's logo (https), and the file's width in pixels (0: unknown, `check` says so).
    logo_url: str = ""
    logo_width: int = _num(0, 0, 10_000)


@dataclass
class Greeting:
    # Whom "Dear {name}," names: a pattern over the recipient's CSV columns. A row without
    # those columns (or with them empty) is greeted by its full name, else "Dear friend,".
    name: str = "{first_name}"


@dataclass
class Subscribe:
    # The web sign-up (GET /s): a welcome message after confirming, and the per-network cap.
    welcome: bool = True
    per_network_per_hour: int = _num(20, 1, 100_000)


@dataclass
class Bounces:
    """Where bounces go and what they do (newsletter.bounces); docs in newsletter.toml."""

    address: str = ""
    verp: bool = False
    hard_limit: int = _num(1, 1, 100)
    soft_limit: int = _num(3, 1, 100)
    soft_days: int = _num(30, 1, 3650, unit=" days")
    address_only_limit: int = _num(2, 1, 100)
    imap_host: str = ""
    imap_port: int = _num(993, 1, 65535)
    imap_security: str = "ssl"
    imap_username: str = ""
    imap_folder: str = "INBOX"
    done_folder: str = "bounces-done"


@dataclass
class Config:
    """All settings, with paths resolved against the directory that holds the config file."""

    sender: Sender = field(default_factory=Sender)
    smtp: Smtp = field(default_factory=Smtp)
    web: Web = field(default_factory=Web)
    paths: Paths = field(default_factory=Paths)
    defaults: Defaults = field(default_factory=Defaults)
    dkim: Dkim = field(default_factory=Dkim)
    org: Org = field(default_factory=Org)
    subscribe: Subscribe = field(default_factory=Subscribe)
    greeting: Greeting = field(default_factory=Greeting)
    bounces: Bounces = field(default_factory=Bounces)
    root: Path = field(default_factory=Path.cwd)
    source: str = "(built-in defaults)"

    def path(self, key: str) -> Path:
        """A `[paths]` entry as an absolute path (relative ones count from the config's folder)."""
        p = Path(getattr(self.paths, key))
        return p if p.is_absolute() else self.root / p

    @property
    def smtp_password(self) -> str | None:
        """The SMTP password from the environment, else the keyring; never from the file."""
        pw = os.environ.get(PASSWORD_ENV)
        if pw:
            return pw
        if not self.smtp.username:
            return None
        try:
            import keyring

            return keyring.get_password("newsletter", self.smtp.username)
        except Exception:  # no keyring backend on a server is normal, not an error
            return None

    @property
    def secret(self) -> str | None:
        """The token-signing secret (NEWSLETTER_SECRET), or None when unset."""
        return os.environ.get(SECRET_ENV) or None

    def require_secret(self) -> str:
        """The token secret, or a clear error saying how to set it."""
        s = self.secret
        if not s or len(s) < 16:
            # Its length, never the value: which of the two is wrong, without printing a secret.
            what = "is not set" if not s else f"has {len(s)} characters; it needs 16 or more"
            raise NewsletterError(
                f"{SECRET_ENV} {what}: links with tokens need it. Set it, e.g. export "
                f"{SECRET_ENV}=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\""
            )
        return s

    def relay_password(self, relay: Relay) -> str | None:
        """A pool relay's password: NEWSLETTER_SMTP_PASSWORD_<NAME>, else the keyring."""
        pw = os.environ.get(relay.password_env)
        if pw or not relay.username:
            return pw or None
        try:
            import keyring

            return keyring.get_password("newsletter", relay.username)
        except Exception:  # no keyring backend on a server is normal, not an error
            return None

    def relays(self) -> list[Relay]:
        """The relays a send uses: the [[smtp.relay]] pool, else [smtp] as one relay."""
        if self.smtp.relay:
            return self.smtp.relay
        s = self.smtp
        return [Relay(s.host, s.port, s.security, s.username, s.connections)]

    def smtp_is_loopback(self, host: str | None = None) -> bool:
        """True when the SMTP host (`host`, else [smtp] host) is this machine (plaintext login
        is only allowed there)."""
        host = (self.smtp.host if host is None else host).strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


_SECTIONS = {
    "sender": Sender,
    "smtp": Smtp,
    "web": Web,
    "paths": Paths,
    "defaults": Defaults,
    "dkim": Dkim,
    "org": Org,
    "subscribe": Subscribe,
    "greeting": Greeting,
    "bounces": Bounces,
}


def _toml_key(attr: str) -> str:
    return attr.rstrip("_")


def number_error(value: Any, rng: Range, whole: bool) -> str | None:
    """Why `value` is not allowed in `rng` ("must be a whole number from 1 to 65535 (got 587.9)"),
    or None when it is."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is not None and whole and not float(number).is_integer():
        number = None  # 587.9, nan and inf are no port
    if number is not None and rng.allows(number):
        return None
    return f"must be {rng.describe(whole)} (got {value!r})"


def option_error(setting: str, value: float) -> str | None:
    """For a command-line option that stands for a setting ("smtp.rate" for --rate): why
    `value` is outside the setting's range, or None."""
    section, key = setting.split(".")
    f = next(f for f in fields(_SECTIONS[section]) if f.name == key)
    why = number_error(value, f.metadata["range"], isinstance(f.default, int))
    return f"{why}, as [{section}] {key}" if why else None


def _coerce(value: Any, default: Any, where: str, rng: Range | None = None) -> Any:
    """Turn a TOML or environment value into the type of the default, or name the bad key."""
    if rng is not None:  # a number: its type and its range in one message
        whole = isinstance(default, int)
        if why := number_error(value, rng, whole):
            raise NewsletterError(f"{where} {why}. Fix the value.")
        number = float(value.strip()) if isinstance(value, str) else value
        return int(number) if whole else float(number)
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise NewsletterError(f"{where}: expected {kind}, got {value!r}. Fix the value.") from None


def load_config(path: str | Path | None = None) -> Config:
    """Read settings from `path`, else ./newsletter.toml if present, else built-in defaults."""
    data: dict[str, Any] = {}
    cfg = Config()
    if path is None and (Path.cwd() / CONFIG_NAME).is_file():
        path = Path.cwd() / CONFIG_NAME
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise NewsletterError(f"{p}: no such config file. Check the --config path.")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise NewsletterError(f"{p}: {err}. Fix the TOML syntax.") from None
        except UnicodeDecodeError:
            raise NewsletterError(f"{p}: not UTF-8 text. Save it as UTF-8.") from None
        cfg.root = p.resolve().parent
        cfg.source = str(p)
    for section, cls in _SECTIONS.items():
        raw = data.pop(section, {})
        if not isinstance(raw, dict):
            raise NewsletterError(f"{cfg.source}: [{section}] must be a table.")
        obj = getattr(cfg, section)
        if section == "smtp":
            cfg.smtp.relay = _relays(cfg, raw.pop("relay", []))
        known = {_toml_key(f.name): f.name for f in fields(cls) if f.name != "relay"}
        for key in raw:
            if key == "password":
                raise NewsletterError(
                    f"{cfg.source}: [{section}] password: secrets do not belong in the file. "
                    f"Remove it and set {PASSWORD_ENV} (or store it in the keyring)."
                )
            if key not in known:
                raise NewsletterError(
                    f"{cfg.source}: unknown key [{section}] {key}. "
                    f"Known keys: {', '.join(sorted(known))}."
                )
        ranges = {f.name: f.metadata.get("range") for f in fields(cls)}
        for key, attr in known.items():
            default = getattr(obj, attr)
            env = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            rng = ranges[attr]
            if env in os.environ:
                where = f"environment {env} ([{section}] {key})"
                setattr(obj, attr, _coerce(os.environ[env], default, where, rng))
            elif key in raw:
                where = f"{cfg.source}: [{section}] {key}"
                setattr(obj, attr, _coerce(raw[key], default, where, rng))
    for section in data:
        raise NewsletterError(
            f"{cfg.source}: unknown section [{section}]. Known: {', '.join(_SECTIONS)}."
        )
    _validate(cfg)
    return cfg


def _relays(cfg: Config, entries: Any) -> list[Relay]:
    """The [[smtp.relay]] entries, each key checked as the other sections' are."""
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise NewsletterError(f"{cfg.source}: write each relay as a [[smtp.relay]] table.")
    known = {f.name: f for f in fields(Relay)}
    relays: list[Relay] = []
    for n, raw in enumerate(entries, 1):
        label = f"[[smtp.relay]] #{n}" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
        relay = Relay()
        for key, value in raw.items():
            if key == "password":
                raise NewsletterError(
                    f"{cfg.source}: {label} password: secrets do not belong in the file. Remove "
                    f"it and set {Relay(name=str(raw.get('name', 'NAME'))).password_env} (or "
                    "store it in the keyring)."
                )
            if key not in known:
                raise NewsletterError(
                    f"{cfg.source}: unknown key {key} in {label}. Known keys: "
                    f"{', '.join(sorted(known))}."
                )
            f = known[key]
            where = f"{cfg.source}: {label} {key}"
            setattr(relay, key, _coerce(value, f.default, where, f.metadata.get("range")))
        if not relay.name or not all(c.isalnum() or c in "-_" for c in relay.name):
            raise NewsletterError(
                f"{cfg.source}: {label} needs a name of letters, digits, - or _ (it names the "
                "relay in messages and its password variable)."
            )
        if not relay.host:
            raise NewsletterError(f"{cfg.source}: {label} needs a host.")
        if relay.security not in SECURITY_MODES:
            raise NewsletterError(
                f"{cfg.source}: {label} security = {relay.security!r}; use one of "
                f"{', '.join(SECURITY_MODES)}."
            )
        if any(r.password_env == relay.password_env for r in relays):
            raise NewsletterError(f"{cfg.source}: two relays named {relay.name!r}; rename one.")
        relays.append(relay)
    return relays


def greeting_fields(pattern: str) -> tuple[str, ...]:
    """The column names a `[greeting] name` pattern uses; ValueError for a malformed one."""
    import string

    names = []
    for _text, name, spec, conv in string.Formatter().parse(pattern):
        if name is None:
            continue
        if not re.fullmatch(r"[a-z0-9_]+", name) or spec or conv:
            raise ValueError(f"{{{name}}} is not a column name")
        names.append(name)
    return tuple(names)


def _validate(cfg: Config) -> None:
    where = cfg.source
    try:
        greeting_fields(cfg.greeting.name)
    except ValueError as err:
        raise NewsletterError(
            f"{where}: [greeting] name = {cfg.greeting.name!r}: {err}. Write column names in "
            'braces, e.g. "{first_name}" or "{first_name} {last_name}".'
        ) from None
    if cfg.smtp.security not in SECURITY_MODES:
        raise NewsletterError(
            f"{where}: [smtp] security = {cfg.smtp.security!r}; use one of "
            f"{', '.join(SECURITY_MODES)}."
        )
    if cfg.web.base_url and not cfg.web.base_url.startswith("https://"):
        host = cfg.web.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        if not (cfg.web.base_url.startswith("http://") and host in ("127.0.0.1", "localhost")):
            raise NewsletterError(
                f"{where}: [web] base_url must start with https:// (got "
                f"{cfg.web.base_url!r}); plain http is only allowed on 127.0.0.1 for testing."
            )
    b = cfg.bounces
    if b.imap_security not in ("ssl", "starttls"):
        raise NewsletterError(
            f"{where}: [bounces] imap_security = {b.imap_security!r}; use ssl (port 993) or "
            "starttls (port 143). Bounces are never fetched without TLS."
        )
    if b.address and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", b.address):
        raise NewsletterError(
            f"{where}: [bounces] address = {b.address!r} is not a plain address; write it as "
            "bounces@your-domain.org (no name, no <>)."
        )
    if cfg.defaults.language not in ("es", "en"):
        raise NewsletterError(f"{where}: [defaults] language must be 'es' or 'en'.")
