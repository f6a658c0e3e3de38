"""Settings: `newsletter.toml` (working directory or --config), each key overridable by environment.

`[smtp] host` is read from `NEWSLETTER_SMTP_HOST`, and so on: NEWSLETTER_<SECTION>_<KEY>.
Secrets never live in the file: the SMTP password comes from NEWSLETTER_SMTP_PASSWORD (or the
keyring), the token secret from NEWSLETTER_SECRET.
"""

from __future__ import annotations

import ipaddress
import os
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
class Smtp:
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    connections: int = 1
    rate: float = 0.0
    timeout: float = 30.0
    retries: int = 5


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


@dataclass
class Subscribe:
    # The web sign-up (GET /s): a welcome message after confirming, and the per-network cap.
    welcome: bool = True
    per_network_per_hour: int = 20


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
            raise NewsletterError(
                f"{SECRET_ENV} is not set (or shorter than 16 characters): links with tokens need "
                f"it. Set it, e.g. export {SECRET_ENV}=\"$(python3 -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))')\""
            )
        return s

    def smtp_is_loopback(self) -> bool:
        """True when the SMTP host is this machine (plaintext login is only allowed there)."""
        host = self.smtp.host.strip("[]")
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
}


def _toml_key(attr: str) -> str:
    return attr.rstrip("_")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Turn a TOML or environment value into the type of the default, or name the bad key."""
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
        known = {_toml_key(f.name): f.name for f in fields(cls)}
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
        for key, attr in known.items():
            default = getattr(obj, attr)
            env = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if env in os.environ:
                setattr(obj, attr, _coerce(os.environ[env], default, f"environment {env}"))
            elif key in raw:
                setattr(obj, attr, _coerce(raw[key], default, f"{cfg.source}: [{section}] {key}"))
    for section in data:
        raise NewsletterError(
            f"{cfg.source}: unknown section [{section}]. Known: {', '.join(_SECTIONS)}."
        )
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    where = cfg.source
    if cfg.smtp.security not in SECURITY_MODES:
        raise NewsletterError(
            f"{where}: [smtp] security = {cfg.smtp.security!r}; use one of "
            f"{', '.join(SECURITY_MODES)}."
        )
    if cfg.smtp.connections < 1 or cfg.smtp.connections > 32:
        raise NewsletterError(f"{where}: [smtp] connections must be 1 to 32.")
    if cfg.smtp.timeout <= 0:  # socket timeouts: 0 is non-blocking, below 0 a ValueError
        raise NewsletterError(f"{where}: [smtp] timeout must be more than 0 seconds.")
    if cfg.smtp.rate < 0:
        raise NewsletterError(f"{where}: [smtp] rate must be 0 (no cap) or more.")
    if cfg.web.base_url and not cfg.web.base_url.startswith("https://"):
        host = cfg.web.base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
        if not (cfg.web.base_url.startswith("http://") and host in ("127.0.0.1", "localhost")):
            raise NewsletterError(
                f"{where}: [web] base_url must start with https:// (got "
                f"{cfg.web.base_url!r}); plain http is only allowed on 127.0.0.1 for testing."
            )
    if cfg.subscribe.per_network_per_hour < 1:
        raise NewsletterError(f"{where}: [subscribe] per_network_per_hour must be 1 or more.")
    if cfg.defaults.language not in ("es", "en"):
        raise NewsletterError(f"{where}: [defaults] language must be 'es' or 'en'.")
