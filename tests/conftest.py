"""Shared fixtures: a real SMTP server on 127.0.0.1, a real browser, a project folder per test."""

from __future__ import annotations

import contextlib
import email
import email.policy
import inspect
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ALERT_ID = "2011-08-12-secure-communities"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# How long a server we start may take to be ready: a bound on a real condition, generous
# because a loaded 2-core machine is slow (the preview's first render alone took 4 s here
# under load, 0.2 s idle); a healthy server is ready long before, only a broken one waits.
STARTUP_TIMEOUT = 60.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    """A port free now. Racy: until something binds it, another process may take it (suites
    run side by side here). For a server use port 0 and read the port it got (LocalController,
    `--port 0` and the start line); for a port nothing answers on, `refused_port`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain_mail(app: Any) -> None:
    """Wait until the app's sign-up mail thread has handled everything queued.

    Every fixture that makes an app calls it at teardown, before the test's SMTP server stops:
    an email still on its way then had its connection cut, and the server's side of it, left
    unclosed, was collected during a later test, which failed on the ResourceWarning
    (test_forwarded_and_archived_copies_invite_to_the_page, in a landing)."""
    mail = app.extensions.get("newsletter.mail")
    if mail is not None:
        mail.join()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections for the whole test: bound by us, never
    listening, so no other process can start listening there meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started inside get SIGINT's default action, as a command run from a terminal.

    A suite started in the background (`cmd &` in a script, as landings and some CI steps are)
    ignores SIGINT, and children inherit that: Python then installs no KeyboardInterrupt
    handler, and a test's Ctrl-C did nothing (the preview's Ctrl-C test hung 60 s in landings,
    never in a foreground run). Main thread only (signal.signal)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def stop(proc: subprocess.Popen) -> None:
    """End a child we started and release its pipe: SIGTERM, then SIGKILL if it has not exited
    within 10 s (each wait bounded, so a stuck child cannot hang the suite)."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout:
        proc.stdout.close()


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = STARTUP_TIMEOUT) -> str:
    """What a child wrote on stdout (bytes, read unbuffered) up to and including the first line
    matching `pattern`: the real readiness signal of a server we started, not a poll of a port
    (which could answer for someone else's). AssertionError with the output if the child exits
    or `timeout` seconds pass first."""
    assert proc.stdout is not None
    fd, out = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        chunk = os.read(fd, 65536) if ready else b""
        out += chunk
        text = out.decode("utf-8", "replace")
        if any(re.search(pattern, line) for line in text.splitlines(keepends=True) if "\n" in line):
            return text
        if ready and not chunk:
            break  # end of output: the child exited
    raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f} s:\n{out.decode()}")


# --- a send's plan, as the send makes it -------------------------------------------------------


def make_plan(j: Any, alert_id: str, recipients: Iterable[Any], **options: bool) -> dict[str, list]:
    """{class: [runlist.Planned, ...]} of a send's plan, by the send's own path (campaign:
    Journal.run_list, dedupe, Journal.plan_run), every class read back: todo, sent,
    suppressed, uncertain, failed. New recipients are recorded as pending unless `dry_run`."""
    listed = j.run_list()
    listed.add(recipients)
    listed.dedupe()
    run = j.plan_run(alert_id, **options)
    classes: dict[str, list] = {c: [] for c in run.counts}
    for cls, planned in run.rows():
        classes[cls].append(planned)
    return classes


# --- a project folder -------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's alerts, templates, locale and recipients in a temporary working dir.

    Tests run `newsletter` there, so state files and outboxes never land in the checkout.
    """
    for name in ("alerts", "templates", "locale", "recipients"):
        src = REPO / name
        if src.exists():
            shutil.copytree(src, tmp_path / name)
    for key in list(__import__("os").environ):
        if key.startswith("NEWSLETTER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fill_placeholders(project: Path) -> None:
    """Give the copied alerts' example.org facts stand-ins on `.test` (RFC 2606's testing names,
    not its example ones): what an organisation does before a real send, which refuses them."""
    for toml in (project / "alerts").glob("*/alert.toml"):
        toml.write_text(toml.read_text(encoding="utf-8").replace("example.org", "nalacc.test"))


@pytest.fixture
def demo(project: Path) -> Path:
    """The project with the repository's demo settings (newsletter.toml), as `make demo` runs."""
    shutil.copy(REPO / "newsletter.toml", project / "newsletter.toml")
    return project


@pytest.fixture
def preview_server(demo: Path) -> Iterator[object]:
    """`newsletter preview` of the real alert on a free port of 127.0.0.1, stopped after the test."""
    from newsletter.config import load_config
    from newsletter.preview import PreviewServer

    server = PreviewServer(load_config(), demo / "alerts" / ALERT_ID, port=0).start()
    try:
        yield server
    finally:
        server.stop()


# --- a real SMTP server -----------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1 that keeps every message; `faults` lets a test script bad replies."""

    host: str
    port: int  # the real one once it listens (start_smtp)
    received: list[Received] = field(default_factory=list)
    # Called for each RCPT with the address; return an SMTP reply string to refuse, or None.
    # Hooks may be coroutines (async def): `await asyncio.sleep(…)` makes a slow server.
    on_rcpt: Callable[[str], str | None] | None = None
    # Called for each DATA; return a reply to refuse, or None. May also sleep (slow server).
    on_data: Callable[[Received], str | None] | None = None
    # Close the connection right after replying 250 to DATA, for these recipients.
    drop_after_data: set[str] = field(default_factory=set)
    auth: tuple[str, str] | None = None
    # Advertise PIPELINING, as real relays do (aiosmtpd answers pipelined commands in order).
    pipelining: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait (bounded) until `count` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(self, srv, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname  # aiosmtpd leaves this to a handler with this hook
        if self.server.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, srv, session, envelope, address, rcpt_options):  # noqa: N802
        if self.server.on_rcpt:
            reply = await _maybe_await(self.server.on_rcpt(address))
            if reply:
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, srv, session, envelope):  # noqa: N802
        rec = Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        if self.server.on_data:
            reply = await _maybe_await(self.server.on_data(rec))
            if reply:
                return reply
        with self.server.lock:
            self.server.received.append(rec)
        if any(a in self.server.drop_after_data for a in rec.rcpt_tos):
            # The message is accepted (kept), but the line is cut before the client reads the
            # 250: exactly what a client sees when the reply is lost. abort() discards the
            # 250 that aiosmtpd still writes after this hook returns.
            srv.transport.abort()
        return "250 OK"


async def _maybe_await(value: object) -> object:
    """Hooks may be plain functions or coroutines (to be slow without blocking the server)."""
    return await value if inspect.isawaitable(value) else value


def _authenticator(server: SmtpServer) -> Callable[..., object]:
    """Accept any login unless `server.auth` names the one (user, password) to accept."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(srv, session, envelope, mechanism, auth_data) -> AuthResult:
        if server.auth is None:
            return AuthResult(success=True)
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == server.auth
        return AuthResult(success=ok, handled=False)

    return check


def start_smtp(server: SmtpServer, handler: object, **kwargs: Any) -> Any:
    """Start aiosmtpd for `server` with `handler` on 127.0.0.1; sets `server.port`; returns the
    controller (`.stop()` it)."""
    from aiosmtpd.controller import Controller

    class LocalController(Controller):
        """Listens on port 0: the kernel picks the port as it binds, so no other process can
        take it between picking and binding (as with free_port()). The port is read off the
        socket before aiosmtpd's readiness check connects to it."""

        def _trigger_server(self) -> None:
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    kwargs.setdefault("ready_timeout", STARTUP_TIMEOUT)
    controller = LocalController(handler, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    server.port = controller.port
    return controller


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 at a free port, stopped after the test.

    It offers AUTH over plaintext (loopback only) and accepts any login unless a test sets
    `smtp_server.auth = (user, password)`.
    """
    server = SmtpServer("127.0.0.1", 0)
    controller = start_smtp(
        server,
        _Handler(server),
        decode_data=False,
        authenticator=_authenticator(server),
        auth_require_tls=False,
    )
    try:
        yield server
    finally:
        controller.stop()


# --- a real browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright (no `playwright install` on these machines)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        yield pg
    finally:
        context.close()


# --- a real IMAP server (Dovecot) -------------------------------------------------------------


@dataclass
class ImapServer:
    """Dovecot on 127.0.0.1 with one throwaway user; TLS with a certificate made for the test."""

    host: str
    port: int  # implicit TLS (imaps)
    starttls_port: int  # plain IMAP that offers STARTTLS
    user: str
    password: str
    cafile: Path  # the server's self-signed certificate: trust it to connect

    def connect(self) -> object:
        """An IMAP4_SSL client logged in as the user."""
        import imaplib
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.cafile))
        imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=ctx, timeout=10)
        imap.login(self.user, self.password)
        return imap


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the cryptography package: keyring's own dep)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def imap_server(request: pytest.FixtureRequest) -> Iterator[ImapServer]:
    """Debian's dovecot-imapd with a throwaway configuration, started for one test and stopped.

    Parametrize it indirectly with extra configuration lines to change the server (e.g. what it
    announces: `imap_capability = …`).

    Runs as whoever runs the tests (root in CI: then its login and mail processes use the
    unprivileged `dovecot`/`dovenull` users the package created, and the mail user is root).
    """
    import grp
    import os
    import pwd
    import subprocess
    import tempfile

    dovecot = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(dovecot).exists():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd; .ci/run does it)")
    # Not under pytest's 0700 folders: Dovecot's unprivileged processes must reach the files.
    base = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    base.chmod(0o755)
    cert, key = self_signed(base)
    root = os.getuid() == 0
    # Dovecot refuses to open mail as root: then the mail belongs to its own `dovecot` user.
    me = pwd.getpwnam("dovecot") if root else pwd.getpwuid(os.getuid())
    user, password = "bounces", "imap-test-password-1"
    (base / "passwd").write_text(f"{user}:{{PLAIN}}{password}\n")
    home = base / "home"
    home.mkdir()
    if root:
        os.chown(home, me.pw_uid, me.pw_gid)
    port, starttls_port = free_port(), free_port()
    conf = base / "dovecot.conf"
    conf.write_text(
        f"""
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain
auth_failure_delay = 0
default_internal_user = {me.pw_name}
default_internal_group = {grp.getgrgid(me.pw_gid).gr_name}
default_login_user = {"dovenull" if root else me.pw_name}
first_valid_uid = 0
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={me.pw_uid} gid={me.pw_gid} home={home}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""
        + getattr(request, "param", "")
    )

    proc = subprocess.Popen(
        [dovecot, "-F", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    server = ImapServer("127.0.0.1", port, starttls_port, user, password, cert)
    try:
        deadline = time.monotonic() + 15
        while True:  # bounded: ready when it accepts connections on the TLS port
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                log = (base / "dovecot.log").read_text() if (base / "dovecot.log").exists() else ""
                raise RuntimeError(f"dovecot exited {proc.returncode}: {out}{log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dovecot did not start listening within 15 s") from None
                time.sleep(0.05)
        yield server
    finally:
        stop(proc)
        shutil.rmtree(base, ignore_errors=True)
