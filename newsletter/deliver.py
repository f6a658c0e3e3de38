"""Transports: SMTP (yagmail connects and logs in once; prepared bytes go over its smtplib), outbox.

A transport has `open()`, `send(mail_from, rcpt, data) -> (code, text)` and `close()`. `send`
returns the server's reply for the recipient (250, 4xx, 5xx); it raises `Retry` when the
connection failed before the message was handed over (safe to send again), `Uncertain` when it
failed after (the server may have it: sending again could deliver it twice), and `AuthFailed`
when the login is refused.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import smtplib
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Protocol

import click

from newsletter.config import PASSWORD_ENV, Config, Relay
from newsletter.errors import NewsletterError
from newsletter.journal import OUTBOX_REPLY

Reply = tuple[int, str]
# Envelope addresses go into SMTP command lines: printable ASCII, no spaces or angle brackets.
_ENVELOPE_RE = re.compile(r"^[!-;=?-~]+@[!-;=?-~]+$")


class Retry(Exception):
    """The connection failed before the message was accepted: send it again later."""


class Uncertain(Exception):
    """The connection failed after the message was handed over: the server may have it."""


class Broken(Exception):
    """The connection failed during an exchange (SmtpTransport.exchange).

    `final` is the previous message's reply if it was read before the failure; `unknown` is
    True when that message's data went out and its reply never came (it may have arrived).
    """

    def __init__(self, why: str, final: Reply | None, unknown: bool) -> None:
        super().__init__(why)
        self.final, self.unknown = final, unknown


class AuthFailed(NewsletterError):
    """The server refused the login: stop, resending will not help."""


class Transport(Protocol):
    """What a send run needs of a transport; one per connection (not thread-safe)."""

    description: str

    @property
    def connected(self) -> bool: ...

    def open(self) -> None: ...

    def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        before_data: Callable[[], None] | None = None,
    ) -> Reply: ...

    def close(self) -> None: ...


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


class SmtpTransport:
    """One SMTP connection through yagmail: login once, then many messages; reconnect on drops."""

    def __init__(self, cfg: Config, relay: Relay | None = None) -> None:
        """[smtp]'s server, or `relay` of a [[smtp.relay]] pool (its own password variable)."""
        s = relay if relay is not None else cfg.smtp
        self.host, self.port, self.security = s.host, s.port, s.security
        self.where = f"{s.host}:{s.port}" if relay is None else f"{relay.name} ({s.host}:{s.port})"
        self.description = f"SMTP {self.where}"
        self.username = s.username
        self.timeout = cfg.smtp.timeout
        self.password: str | None = None
        setting = "[smtp]" if relay is None else f"[[smtp.relay]] {relay.name}"
        if self.username:
            if s.security == "none" and not cfg.smtp_is_loopback(s.host):
                raise NewsletterError(
                    f"{cfg.source}: {setting} security = none with a username would send the "
                    f"password unencrypted to {self.where}. Use security = starttls (port 587) "
                    "or ssl (port 465)."
                )
            env = PASSWORD_ENV if relay is None else relay.password_env
            self.password = cfg.smtp_password if relay is None else cfg.relay_password(relay)
            if not self.password:
                raise NewsletterError(
                    f"no SMTP password for {setting} username {self.username!r}: set "
                    f"{env} or store it with `keyring set newsletter {self.username}`."
                )
        self._yag: object | None = None
        self._smtp: smtplib.SMTP | None = None
        self._esmtp_size = False
        self._pipelining = False
        self._sock: socket.socket | None = None  # the logged-in connection's socket
        self._buf = bytearray()  # bytes read from it, not yet taken as replies

    @property
    def connected(self) -> bool:
        """True while a logged-in connection is up (a failed send drops it)."""
        return self._smtp is not None

    @property
    def pipelining(self) -> bool:
        """The server takes commands in groups (RFC 2920), so one message's data and the next
        message's envelope can share a write and their replies one read (see exchange)."""
        return self._smtp is not None and self._pipelining

    def open(self) -> None:
        """Connect (TLS as configured, certificates verified) and log in once."""
        import yagmail

        self.close()
        # yagmail would start TLS without checking the certificate; pass a verifying context
        # (made only when TLS is used: loading the system's CA certificates costs a MiB).
        context = ssl.create_default_context() if self.security != "none" else None
        kwargs: dict[str, object] = {"timeout": self.timeout}
        if self.security == "ssl":
            kwargs["context"] = context
        try:
            yag = yagmail.SMTP(
                self.username or None,
                self.password,
                host=self.host,
                port=self.port,
                smtp_ssl=self.security == "ssl",
                smtp_starttls={"context": context} if self.security == "starttls" else False,
                smtp_skip_login=not self.username,
                soft_email_validation=False,
                **kwargs,
            )
            self._yag = yag
            # yagmail turns a username without "@" into "name@gmail.com"; log in as configured.
            yag.user = self.username
            yag.login()
            # Without TLS or login, yagmail never greets the server; smtplib.sendmail would.
            yag.smtp.ehlo_or_helo_if_needed()
        except smtplib.SMTPAuthenticationError as err:
            self._drop()
            raise AuthFailed(
                f"{self.where} refused the login for [smtp] username {self.username!r} "
                f"({err.smtp_code} {_text(err.smtp_error)}). Check the username and "
                "NEWSLETTER_SMTP_PASSWORD."
            ) from None
        except smtplib.SMTPNotSupportedError as err:
            self._drop()
            raise NewsletterError(
                f"{self.where}: {str(err).rstrip('.')}. Check [smtp] security and port "
                "(587 starttls, 465 ssl)."
            ) from None
        except ssl.SSLCertVerificationError as err:
            self._drop()
            raise NewsletterError(
                f"{self.where}: the TLS certificate does not verify ({err.verify_message}). "
                "Check [smtp] host."
            ) from None
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            raise Retry(f"{self.where}: cannot connect: {_describe(err)}") from None
        self._smtp = yag.smtp
        self._esmtp_size = self._smtp.has_extn("size")
        self._pipelining = self._smtp.has_extn("pipelining")
        self._sock = self._smtp.sock
        self._buf = bytearray()
        _kernel_timeouts(self._sock, self.timeout)

    def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        before_data: Callable[[], None] | None = None,
    ) -> Reply:
        """MAIL, RCPT, DATA by hand: only a failure after the data went out is uncertain.

        `before_data` runs after the server's 354 and before any message byte is sent (the
        journal's in-flight mark); if it raises, the connection is closed mid-DATA, which makes
        the server discard the transaction, and the error goes to the caller.
        """
        for address in (mail_from, rcpt):
            if not _ENVELOPE_RE.match(address):
                raise NewsletterError(f"{address!r}: not an address for the SMTP envelope.")
        if self._smtp is None:
            self.open()
        body = _data_lines(data)
        handed_over = False
        try:
            code, text = self._envelope(mail_from, rcpt, len(data))
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            raise Retry(f"{self.where}: {_describe(err)}") from None
        if code == 354 and before_data is not None:
            try:
                before_data()
            except BaseException:
                self._drop()
                raise
        try:
            if code == 354:
                handed_over = True
                self._send(body)
                code, text = self._replies(1)[0]
            elif code >= 400:
                self._reset(code)
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            what = f"{self.where}: {_describe(err)}"
            if handed_over:
                raise Uncertain(what + " after the message was sent") from None
            raise Retry(what) from None
        if code == 421:  # the server is closing this connection: reconnect for the next one
            self._drop()
        return code, _text(text)

    def write_data(self, data: bytes, *, dot_safe: bool = False, then: bytes = b"") -> None:
        """Send a message's data (its envelope got 354; its in-flight mark is on disk) without
        waiting for the reply: exchange reads it with the next envelope's replies. Broken
        (unknown) if the line fails: part of the message may have gone.

        `dot_safe`: the caller knows no line starts with "." and the data ends in CRLF (as
        message.PreparedEdition builds it), so the 20 KiB are neither scanned nor copied.
        `then`: the next message's envelope (envelope()), in the same write: one system call
        and one wake-up of the server instead of two (exchange(…, sent=True) reads its replies).
        """
        sock = self._sock
        end = b".\r\n" + then
        try:
            if sock is None:
                raise OSError("not connected")
            if not dot_safe:
                sock.sendall(_data_lines(data) + then)
            elif isinstance(sock, ssl.SSLSocket):  # no sendmsg over TLS
                sock.sendall(data + end)
            else:
                _send_parts(sock, [memoryview(data), memoryview(end)])
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            raise Broken(f"{self.where}: {_describe(err)}", None, unknown=True) from None

    def envelope(self, mail_from: str, rcpt: str, size: int) -> bytes:
        """MAIL FROM, RCPT TO and DATA as one group of command lines (RFC 2920). The addresses
        must pass envelope_ok."""
        size_opt = f" SIZE={size}" if self._esmtp_size else ""
        return f"MAIL FROM:<{mail_from}>{size_opt}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()

    def exchange(
        self,
        data_sent: bool,
        mail_from: str | None = None,
        rcpt: str = "",
        size: int = 0,
        *,
        sent: bool = False,
        meanwhile: Callable[[], object] | None = None,
    ) -> tuple[Reply | None, Reply | None, bool]:
        """The next message's envelope, pipelined (RFC 2920) behind the data write_data sent,
        and one read for the replies of both.

        `sent`: the envelope already went, behind that data in the same write (write_data's
        `then`); only its replies are read. `meanwhile` runs once the envelope is out and before
        the replies are read (the caller builds the next message while the server works).

        Returns (the data's final reply, or None if `data_sent` is False; the envelope's result,
        or None without an envelope; whether MAIL FROM itself was refused). The result is
        (354, …) when the server waits for that message's data — the caller marks it in flight,
        then write_data — else the first refusal (the transaction reset; a refused sender is
        the caller's to stop on, with check_sender). Raises Broken when the line fails. The
        addresses must pass envelope_ok.
        """
        final: Reply | None = None
        try:
            if self._sock is None:
                raise OSError("not connected")
            if mail_from is not None and not sent:
                self._send(self.envelope(mail_from, rcpt, size))
            if meanwhile is not None:
                meanwhile()
            if data_sent:
                code, text = self._replies(1)[0]
                final = (code, _text(text))
                if code == 421:  # closing: the envelope will get no answer
                    self._drop()
                    return final, (421, final[1]), False
            if mail_from is None:
                return final, None, False
            replies = self._replies(3)
            refused = self._refusal(replies)
            if refused is None:
                return final, (replies[2][0], _text(replies[2][1])), False
        except (smtplib.SMTPException, OSError) as err:
            self._drop()
            unknown = data_sent and final is None
            raise Broken(f"{self.where}: {_describe(err)}", final, unknown) from None
        sender_refused = replies[0][0] >= 500  # check_sender's to report; keep the line
        if not sender_refused:
            self._reset(refused[0])
        return final, (refused[0], _text(refused[1])), sender_refused

    def abort(self) -> None:
        """Drop the connection without a word (mid-DATA: the server discards the message)."""
        self._drop()

    def check_sender(self, code: int, text: str, mail_from: str) -> None:
        """Stop on a permanent refusal of MAIL FROM (see _check_sender)."""
        self._check_sender(code, text, mail_from)

    def _envelope(self, mail_from: str, rcpt: str, size: int) -> tuple[int, bytes]:
        """MAIL FROM, RCPT TO, DATA: the first refusal, else (354, …) and the body may follow."""
        size_opt = f" SIZE={size}" if self._esmtp_size else ""
        if not self._pipelining:
            code, text = self._command(f"MAIL FROM:<{mail_from}>{size_opt}")
            self._check_sender(code, text, mail_from)
            if code == 250:
                code, text = self._command(f"RCPT TO:<{rcpt}>")
            if code in (250, 251):
                code, text = self._command("DATA")
            return code, text
        # RFC 2920: one write, three replies; two round trips fewer per message.
        self._send(self.envelope(mail_from, rcpt, size))
        replies = self._replies(3)
        refused = self._refusal(replies)
        if refused is None:
            return replies[2]
        self._check_sender(*replies[0], mail_from)
        return refused

    def _refusal(self, replies: list[tuple[int, bytes]]) -> tuple[int, bytes] | None:
        """The first refusal among a pipelined envelope's three replies, else None. A server
        that takes DATA after refusing the envelope gets an empty message's end."""
        refused = next(
            (r for r, ok in zip(replies, ((250,), (250, 251)), strict=False) if r[0] not in ok),
            None,
        )
        if refused is not None and replies[2][0] == 354:
            self._send(b".\r\n")
            self._replies(1)
        return refused

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        sock.sendall(data)

    def _command(self, line: str) -> tuple[int, bytes]:
        """One command and its reply (no pipelining). The command is one line: the callers'
        addresses passed envelope_ok, so no CR or LF can add another."""
        self._send(line.encode("ascii") + b"\r\n")
        return self._replies(1)[0]

    def _replies(self, n: int) -> list[tuple[int, bytes]]:
        """The next `n` replies, read from the socket into one buffer (a recv brings all the
        replies to a pipelined group at once: smtplib's getreply read them a line at a time
        through a file object, ~5 µs a reply more).

        As strict as smtplib: a line over SMTP_MAXLINE is an error (500); a reply's lines are
        "CODE-text" but the last, "CODE text" (RFC 5321 4.2.1); a line without a three-digit
        code ends its reply with code -1 (never a success); the text is each line's text
        stripped, joined by newlines. End of file: SMTPServerDisconnected."""
        sock, buf = self._sock, self._buf
        out: list[tuple[int, bytes]] = []
        lines: list[bytes] = []
        at = 0
        while len(out) < n:
            end = buf.find(b"\n", at)
            if end < 0:
                if len(buf) - at > _MAXLINE:
                    raise smtplib.SMTPResponseException(500, "Line too long.")
                del buf[:at]
                at = 0
                if sock is None:
                    raise smtplib.SMTPServerDisconnected("please run connect() first")
                try:
                    chunk = sock.recv(_RECV)
                except OSError as err:
                    raise smtplib.SMTPServerDisconnected(
                        f"Connection unexpectedly closed: {_describe(err)}"
                    ) from None
                if not chunk:
                    raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
                buf += chunk
                continue
            line = bytes(buf[at : end + 1])
            at = end + 1
            if len(line) > _MAXLINE:
                raise smtplib.SMTPResponseException(500, "Line too long.")
            lines.append(line[4:].strip(b" \t\r\n"))
            code = line[:3]
            if not code.isdigit():
                out.append((-1, b"\n".join(lines)))
                lines = []
            elif line[3:4] != b"-":
                out.append((int(code), b"\n".join(lines)))
                lines = []
        del buf[:at]
        return out

    def _check_sender(self, code: int, text: bytes | str, mail_from: str) -> None:
        """A permanent refusal of MAIL FROM is the run's problem, not one recipient's: stop.

        Otherwise a relay that wants a login (530) or rejects the sender would mark the whole
        list failed, one recipient at a time.
        """
        if code < 500:
            return
        self._reset(code)
        reply = f"{code} {_text(text)}"
        if code == 530 or "auth" in reply.lower():
            raise AuthFailed(
                f"{self.where} wants a login before it takes mail ({reply}). Set [smtp] "
                "username and NEWSLETTER_SMTP_PASSWORD."
            )
        raise NewsletterError(
            f"{self.where} refused the sender <{mail_from}> ({reply}). Check [sender] from: "
            "the relay must accept mail from that address. Nothing more was sent."
        )

    def _reset(self, code: int) -> None:
        """Forget a refused transaction so the connection can carry the next message."""
        if code == 421:
            return
        try:
            self._command("RSET")
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        """Forget a broken connection without talking to it (QUIT could hang or fail)."""
        yag, self._yag, self._smtp, self._sock = self._yag, None, None, None
        self._buf = bytearray()
        if yag is not None:
            yag.is_closed = True  # type: ignore[attr-defined]
            sock = getattr(yag, "smtp", None)
            if sock is not None:
                sock.close()

    def close(self) -> None:
        """QUIT politely when the connection is still up."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._command("QUIT")
        self._drop()


_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_MAXLINE = smtplib._MAXLINE  # the longest reply line smtplib takes (8192)
_RECV = 16384  # bytes asked of one recv: a pipelined group's replies come in one


def _kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    """[smtp] timeout enforced by the kernel (SO_RCVTIMEO, SO_SNDTIMEO) on a blocking socket,
    instead of by Python, which polls before every send and recv of a socket with a timeout
    (three or four poll calls a message). A call that times out fails with EAGAIN, which
    _describe reports as the timeout it is. TLS sockets keep Python's timeout (a timed-out
    read inside a TLS record is OpenSSL's to report), as does any system without these
    options."""
    if isinstance(sock, ssl.SSLSocket):
        return
    seconds = int(timeout)
    micros = round((timeout - seconds) * 1_000_000) or (0 if seconds else 1)  # 0 0: forever
    tv = struct.pack("@ll", seconds, micros)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    except (OSError, AttributeError):
        return
    sock.settimeout(None)


class OutboxTransport:
    """With no `[smtp] host`: one `.eml` per recipient under `outbox/<alert-id>/`."""

    def __init__(self, cfg: Config, alert_id: str) -> None:
        self.folder = cfg.path("outbox") / alert_id
        self.description = f"the outbox {self.folder}"
        self._lock = threading.Lock()
        self._numbers: itertools.count[int] | None = None

    @property
    def connected(self) -> bool:
        return self._numbers is not None

    def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NewsletterError(
                f"{self.folder}: cannot create the outbox ({err.strerror}). Check [paths] outbox."
            ) from None
        with self._lock:
            if self._numbers is None:
                # Number on from what a previous run left, so a resume never overwrites a file.
                self._numbers = itertools.count(len(list(self.folder.glob("*.eml"))) + 1)

    def send(
        self,
        mail_from: str,
        rcpt: str,
        data: bytes,
        before_data: Callable[[], None] | None = None,
    ) -> Reply:
        if before_data is not None:
            before_data()
        if self._numbers is None:
            self.open()
        with self._lock:
            n = next(self._numbers)  # type: ignore[arg-type]
        path = self.folder / f"{n:06d}-{_UNSAFE.sub('_', rcpt)}.eml"
        # Imported here: content (and the Markdown parser with it, ~35 ms) is the alert's, and
        # the send's process and workers need only this function of it, and only for the outbox.
        from newsletter.content import write_atomic

        try:
            write_atomic(path, data)  # a temporary file beside it, then a rename
        except OSError as err:
            raise NewsletterError(f"{path}: cannot write ({err.strerror}).") from None
        return 250, f"{OUTBOX_REPLY[4:]}{path}"  # the journal knows it reached nobody

    def close(self) -> None:
        pass


def _send_parts(sock: socket.socket, parts: list[memoryview]) -> None:
    """sendall for several buffers in one system call each round, without joining them."""
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts and sent:
            parts[0] = parts[0][sent:]


def envelope_ok(address: str) -> bool:
    """Printable ASCII without spaces or angle brackets: safe in an SMTP command line."""
    return bool(_ENVELOPE_RE.match(address))


def _data_lines(data: bytes) -> bytes:
    """The message as DATA sends it: dot-stuffed (RFC 5321 4.5.2), ending in CRLF "." CRLF."""
    body = data.replace(b"\n.", b"\n..")  # C speed; a regex pass cost ~30 µs on 20 KiB
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _describe(err: BaseException) -> str:
    # BlockingIOError: a kernel timeout (SO_RCVTIMEO / SO_SNDTIMEO) of a blocking socket
    if isinstance(err, (TimeoutError, BlockingIOError)):
        return "timed out (no reply within [smtp] timeout)"
    if isinstance(err, smtplib.SMTPServerDisconnected):
        # smtplib reports a read timeout as a disconnect ("…: timed out"): name the setting.
        if "timed out" in str(err):
            return "timed out (no reply within [smtp] timeout)"
        return "connection closed by the server"
    return str(err) or type(err).__name__


def preload() -> None:
    """Import yagmail (and keyring behind it) now, in the send's process, so its K worker
    processes share it instead of each importing it (125 ms and several MiB apiece)."""
    import yagmail  # noqa: F401


def make_transport(cfg: Config, alert_id: str, relay: Relay | None = None) -> Transport:
    """SMTP to `relay` (one of a [[smtp.relay]] pool), else to `[smtp] host` when set, else the
    outbox."""
    if relay is None and cfg.smtp.relay and not cfg.smtp.host:
        relay = cfg.smtp.relay[0]  # one-off copies (a test copy, a forward): the first relay
    if relay is not None and relay.host:
        return SmtpTransport(cfg, relay)
    if cfg.smtp.host:
        return SmtpTransport(cfg)
    return OutboxTransport(cfg, alert_id)


def send_one(cfg: Config, alert_id: str, rcpt: str, data: bytes) -> str:
    """Deliver one prepared message (a test copy, a forward); a clear error unless accepted."""
    from newsletter.message import sender_address

    mail_from = sender_address(cfg)[1]
    transport = make_transport(cfg, alert_id)
    try:
        transport.open()
        code, text = transport.send(mail_from, rcpt, data)
    except (Retry, Uncertain) as err:
        raise NewsletterError(f"{err}; try again later.") from None
    finally:
        transport.close()
    if code >= 300:
        raise NewsletterError(f"{transport.description} refused {rcpt}: {code} {text}")
    if isinstance(transport, OutboxTransport):
        click.echo(f"No [smtp] host configured: {text}", err=True)
    return text
