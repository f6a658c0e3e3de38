"""`newsletter bounces fetch` against a real IMAP server (Dovecot) on 127.0.0.1, over TLS."""

from __future__ import annotations

import imaplib
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.journal import Journal
from newsletter.suppressions import Suppressions
from tests.test_bounces import DOMAIN, FIXTURES, complaint, delivered, hard_bounce

PERSONAL = (
    b"From: Rosa Alvarez <rosa@example.org>\r\nTo: bounces@nalacc.example.org\r\n"
    b"Subject: Pregunta sobre la alerta\r\nMessage-ID: <rosa-1@example.org>\r\n"
    b"Date: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\nHola, una pregunta sobre la reunion.\r\n"
)


def settings(server, security: str = "ssl", port: int | None = None) -> str:
    return (
        f'[sender]\nfrom = "NALACC <alerts@{DOMAIN}>"\n'
        f'[bounces]\naddress = "bounces@{DOMAIN}"\nimap_host = "127.0.0.1"\n'
        f'imap_port = {port or server.port}\nimap_security = "{security}"\n'
        f'imap_username = "{server.user}"\ndone_folder = "Processed bounces"\n'
    )


def folder(imap: imaplib.IMAP4, name: str) -> list[tuple[bytes, str]]:
    """(Message-ID line, flags) of every message in a folder."""
    typ, _ = imap.select(f'"{name}"', readonly=True)
    assert typ == "OK", name
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    out = []
    for item in data:
        if isinstance(item, tuple):
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
            out.append((item[1].strip(), flags))
    return out


@pytest.fixture
def mailbox(imap_server, project, monkeypatch):
    """The bounce mailbox holding a real hard bounce and complaint about our members, a real
    auto-reply and a person's question; the state file knowing what was sent to whom."""
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", imap_server.password)
    monkeypatch.setenv("SSL_CERT_FILE", str(imap_server.cafile))  # trust the test's own CA
    Path("newsletter.toml").write_text(settings(imap_server))
    with Journal("newsletter.db") as j:
        ids = delivered(j, "a1", "ana@example.org", "bob@example.org", "carla@example.org")
    imap = imap_server.connect()
    for data in (
        hard_bounce("ana@example.org", ids["ana@example.org"]),
        PERSONAL,
        complaint(ids["bob@example.org"], "bob@example.org"),
        (FIXTURES / "sisimai/rfc3834-01.eml").read_bytes(),
    ):
        typ, _ = imap.append("INBOX", "", imaplib.Time2Internaldate(time.time()), data)
        assert typ == "OK"
    yield imap
    imap.logout()


def test_fetch_moves_bounces_and_leaves_a_personal_email_unread(mailbox, imap_server):
    result = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    assert "Read 4 messages: 1 bounce, 1 complaint" in result.output
    assert "Moved 3 messages to 'Processed bounces'" in result.output
    inbox = folder(mailbox, "INBOX")
    assert inbox == [(b"Message-ID: <rosa-1@example.org>", "")]  # there, and not \Seen
    done = folder(mailbox, "Processed bounces")
    assert len(done) == 3
    with Journal("newsletter.db") as j:
        assert Suppressions(j).get("ana@example.org").kind == "bounced"
        assert Suppressions(j).get("bob@example.org").kind == "complained"
        assert not Suppressions(j).has("carla@example.org")

    # Again: nothing new, nothing moved, the person's mail still unread where it was.
    again = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert again.exit_code == 0, again.output
    assert "Read 1 message: 0 bounces" in again.output and "Moved 0 messages" in again.output
    assert folder(mailbox, "INBOX") == inbox and len(folder(mailbox, "Processed bounces")) == 3


def test_fetch_over_starttls(mailbox, imap_server):
    Path("newsletter.toml").write_text(settings(imap_server, "starttls", imap_server.starttls_port))
    result = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    assert "Moved 3 messages" in result.output


def test_fetch_errors_are_one_clear_line(mailbox, imap_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", "wrong")
    result = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert result.exit_code == 1
    assert "IMAP 127.0.0.1:" in result.output and "NEWSLETTER_IMAP_PASSWORD" in result.output
    assert "wrong" not in result.output and "Traceback" not in result.output
    monkeypatch.delenv("SSL_CERT_FILE")  # the self-signed certificate is no longer trusted
    monkeypatch.setenv("NEWSLETTER_IMAP_PASSWORD", imap_server.password)
    result = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert result.exit_code == 1 and "not trusted" in result.output
    assert len(folder(mailbox, "INBOX")) == 4  # nothing touched


NO_MOVE = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS\n"


@pytest.mark.parametrize("imap_server", [NO_MOVE], indirect=True)
def test_fetch_without_move_copies_and_expunges_only_what_it_moved(mailbox, imap_server):
    """A server without MOVE (RFC 6851): COPY, flag, then UID EXPUNGE of exactly those (UIDPLUS),
    so a message the person had marked deleted themselves is not expunged with them."""
    caps = mailbox.capability()[1][0].split()
    assert b"MOVE" not in caps and b"UIDPLUS" in caps
    typ, _ = mailbox.append(
        "INBOX", r"(\Deleted)", imaplib.Time2Internaldate(time.time()),
        PERSONAL.replace(b"rosa-1@", b"rosa-2@"),
    )
    assert typ == "OK"
    result = CliRunner().invoke(cli, ["bounces", "fetch"])
    assert result.exit_code == 0, result.output
    assert "Moved 3 messages" in result.output
    assert sorted(folder(mailbox, "INBOX")) == [
        (b"Message-ID: <rosa-1@example.org>", ""),
        (b"Message-ID: <rosa-2@example.org>", "\\Deleted"),
    ]
    assert len(folder(mailbox, "Processed bounces")) == 3
