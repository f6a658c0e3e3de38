"""Where bounce messages come from: files, Maildir folders, mbox files, standard input, IMAP.

Reading is read-only everywhere but IMAP, where a processed message (a bounce, complaint,
delay warning or auto-reply) is moved to `[bounces] done_folder` once the journal holds what it
said: never deleted, and any other message is left exactly as it was: fetched with BODY.PEEK
(so not marked \\Seen), not moved, not flagged.
"""

from __future__ import annotations

import contextlib
import imaplib
import mailbox
import os
import ssl
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from newsletter.config import Config
from newsletter.errors import NewsletterError

IMAP_PASSWORD_ENV = "NEWSLETTER_IMAP_PASSWORD"
KEYRING_SERVICE = "newsletter-imap"
MAX_MESSAGE = 50 * 1024 * 1024  # a bounce is small; a larger file is not read whole


def read_paths(paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """(label, message bytes) from each PATH: `-` (stdin: one message or an mbox), a Maildir
    folder (cur/ and new/), a folder of .eml files, an mbox file or one message file."""
    for raw in paths:
        if raw == "-":
            data = sys.stdin.buffer.read()
            if data.startswith(b"From "):
                yield from _mbox_bytes(data, "stdin")
            else:
                yield "stdin", data
            continue
        path = Path(raw)
        if not path.exists():
            raise NewsletterError(
                f"{path}: no such file or folder. Give .eml files, a Maildir "
                "folder, an mbox file, or - for standard input."
            )
        if path.is_dir():
            yield from _folder(path)
        else:
            yield from _file(path)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(MAX_MESSAGE)
    except OSError as err:
        raise NewsletterError(f"{path}: cannot read it ({err.strerror}).") from None


def _folder(path: Path) -> Iterator[tuple[str, bytes]]:
    """A Maildir (cur/, new/; tmp/ is being written and is skipped) or a folder of files."""
    if (path / "cur").is_dir() or (path / "new").is_dir():
        dirs = [path / "new", path / "cur"]
    else:
        dirs = [path]
    for d in dirs:
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            names = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
        for name in names:
            yield from _file(d / name)


def _file(path: Path) -> Iterator[tuple[str, bytes]]:
    """One file: each message of an mbox, else the file as one message."""
    if _is_mbox(path):
        yield from _mbox(path)
    else:
        yield str(path), _read(path)


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(5)
    except OSError:
        return False
    return head == b"From " and path.suffix.lower() not in (".eml", ".msg")


def _mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    box = mailbox.mbox(path, create=False)
    try:
        for n, key in enumerate(box.keys(), 1):
            yield f"{path}#{n}", box.get_bytes(key)
    finally:
        box.close()


def _mbox_bytes(data: bytes, label: str) -> Iterator[tuple[str, bytes]]:
    """An mbox given as bytes (stdin): split on `From ` lines, `>From ` unquoted."""
    for n, chunk in enumerate(data.split(b"\nFrom "), 1):
        body = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""
        lines = [ln[1:] if ln.startswith(b">From ") else ln for ln in body.split(b"\n")]
        yield f"{label}#{n}", b"\n".join(lines)


# --- IMAP ------------------------------------------------------------------------------------


def imap_password(cfg: Config) -> str:
    """NEWSLETTER_IMAP_PASSWORD, else the keyring (`keyring set newsletter-imap USERNAME`)."""
    pw = os.environ.get(IMAP_PASSWORD_ENV)
    if pw:
        return pw
    with contextlib.suppress(Exception):  # no keyring backend on a server is normal
        import keyring

        pw = keyring.get_password(KEYRING_SERVICE, cfg.bounces.imap_username)
    if not pw:
        raise NewsletterError(
            f"no IMAP password: set {IMAP_PASSWORD_ENV}, or store it with `keyring set "
            f"{KEYRING_SERVICE} {cfg.bounces.imap_username or 'USERNAME'}`."
        )
    return pw


class ImapMailbox:
    """The bounce mailbox over TLS: list, fetch without marking read, move to the done folder."""

    def __init__(self, cfg: Config, context: ssl.SSLContext | None = None) -> None:
        b = cfg.bounces
        if not b.imap_host or not b.imap_username:
            raise NewsletterError(
                f"{cfg.source}: [bounces] imap_host and imap_username must be set for "
                "`bounces fetch` (or use `newsletter bounces read PATH`)."
            )
        self.cfg = cfg
        self.where = f"{b.imap_host}:{b.imap_port}"
        self.context = context or ssl.create_default_context()
        self.imap: imaplib.IMAP4 | None = None
        self.can_move = False
        self.capabilities: set[str] = set()

    def __enter__(self) -> ImapMailbox:
        b = self.cfg.bounces
        password = imap_password(self.cfg)
        try:
            if b.imap_security == "ssl":
                self.imap = imaplib.IMAP4_SSL(
                    b.imap_host, b.imap_port, ssl_context=self.context, timeout=30
                )
            else:
                self.imap = imaplib.IMAP4(b.imap_host, b.imap_port, timeout=30)
                self.imap.starttls(ssl_context=self.context)
            self.imap.login(b.imap_username, password)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as err:
            self._close()
            raise NewsletterError(
                f"IMAP {self.where}: {_why(err)}. Check [bounces] imap_host, imap_port, "
                f"imap_security, imap_username and {IMAP_PASSWORD_ENV}."
            ) from None
        # Servers announce more after login (MOVE, UIDPLUS) than imaplib saw when connecting.
        typ, data = self.imap.capability()
        caps = set(data[0].decode(errors="replace").upper().split()) if typ == "OK" else set()
        self.capabilities = caps | set(self.imap.capabilities)
        self.can_move = "MOVE" in self.capabilities
        self._ok(self.imap.select(_quote(b.imap_folder)), f"open folder {b.imap_folder!r}")
        self._ensure(b.done_folder)
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.imap is not None:
            with contextlib.suppress(Exception):
                self.imap.logout()
            self.imap = None

    def _ok(self, answer: tuple[str, list], doing: str) -> list:
        typ, data = answer
        if typ != "OK":
            detail = b" ".join(x for x in data if isinstance(x, bytes)).decode(errors="replace")
            raise NewsletterError(f"IMAP {self.where}: cannot {doing}: {detail or typ}.")
        return data

    def _ensure(self, folder: str) -> None:
        assert self.imap is not None
        typ, _ = self.imap.status(_quote(folder), "(MESSAGES)")
        if typ != "OK":
            self._ok(self.imap.create(_quote(folder)), f"create folder {folder!r}")

    def uids(self) -> list[bytes]:
        """Every message in the folder (read or not: a bounce someone opened is still one)."""
        assert self.imap is not None
        data = self._ok(self.imap.uid("SEARCH", "ALL"), "list messages")
        return data[0].split() if data and data[0] else []

    def fetch(self, uid: bytes) -> bytes | None:
        """The message's bytes, without setting \\Seen (BODY.PEEK)."""
        assert self.imap is not None
        data = self._ok(self.imap.uid("FETCH", uid, "(BODY.PEEK[])"), "fetch a message")
        for item in data:
            if isinstance(item, tuple) and len(item) == 2:
                return item[1]
        return None

    def move_done(self, uids: list[bytes]) -> None:
        """Move processed messages to the done folder (MOVE, else COPY then expunge just those)."""
        if not uids:
            return
        assert self.imap is not None
        folder = _quote(self.cfg.bounces.done_folder)
        seq = b",".join(uids).decode()
        if self.can_move:
            self._ok(self.imap.uid("MOVE", seq, folder), "move messages to the done folder")
            return
        self._ok(self.imap.uid("COPY", seq, folder), "copy messages to the done folder")
        self._ok(self.imap.uid("STORE", seq, "+FLAGS.SILENT", r"(\Deleted)"), "flag moved copies")
        if "UIDPLUS" in self.capabilities:
            self._ok(self.imap.uid("EXPUNGE", seq), "expunge moved copies")
        # Without UIDPLUS an EXPUNGE could remove other \Deleted mail: leave them flagged.


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _why(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the server's TLS certificate is not trusted ({err.verify_message})"
    if isinstance(err, imaplib.IMAP4.error):
        text = str(err)
        if text.startswith("b'") or text.startswith('b"'):
            text = text[2:-1]
        return f"the server refused: {text}"
    return str(err) or type(err).__name__
