"""What the sender sees: the summary of a read, the sender-side advice, and `status`'s lines.

Rates are per alert, over the messages the relay accepted (sent): Gmail asks bulk senders to keep
spam complaints under 0.1 % and never to reach 0.3 %; a hard-bounce rate above 2 % is the usual
sign of a stale list (and what providers read as a spammer's list).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from newsletter.bounces.classify import ADVICE, COMPLAINT, HARD, SENDER, SOFT
from newsletter.config import Config
from newsletter.journal import Journal
from newsletter.recipients import plural

if TYPE_CHECKING:
    from newsletter.bounces.commands import Summary

COMPLAINT_WARN = 0.001  # 0.1 %
COMPLAINT_LOUD = 0.003  # 0.3 %
HARD_WARN = 0.02  # 2 %
SHOW_MAX = 20

CAUSE = {
    "authentication": "as failing authentication",
    "blocklist": "for the sender's blocklisting or reputation",
    "content": "as spam or for the content",
    "rate": "for sending too fast",
    "relay": "as relaying denied",
    "policy": "by policy",
}


def sender_domain(cfg: Config) -> str:
    """The domain SPF/DKIM/DMARC advice is about: DKIM's, else the From address's."""
    if cfg.dkim.domain:
        return cfg.dkim.domain
    from newsletter.message import sender_address

    try:
        return sender_address(cfg)[1].rpartition("@")[2]
    except Exception:  # a broken [sender] from is reported by the commands that need it
        return "your domain"


def advice_lines(cfg: Config, items: Iterable[tuple[str, str]]) -> list[str]:
    """`N messages refused by outlook.com as failing authentication: check …`, most first,
    from (remote domain, category) pairs."""
    domain = sender_domain(cfg)
    counts = Counter(items)
    lines = []
    for (remote, category), n in counts.most_common():
        cause = CAUSE.get(category, "by policy")
        advice = ADVICE.get(category, ADVICE["policy"]).format(domain=domain)
        lines.append(
            f"{plural(n, 'message')} refused by {remote or 'a receiving server'} {cause}: {advice}"
        )
    return lines


def print_summary(cfg: Config, s: Summary) -> None:
    """The lines `bounces read` and `bounces fetch` print."""
    from newsletter.bounces import parse

    k = s.kinds
    bounces = k[parse.DSN] + k[parse.BOUNCE]
    parts = [plural(bounces, "bounce"), plural(k[parse.COMPLAINT], "complaint")]
    if k[parse.DELAY]:
        parts.append(f"{plural(k[parse.DELAY], 'delay warning')} (ignored)")
    parts.append(f"{plural(k[parse.AUTOREPLY], 'auto-reply', 'auto-replies')} (ignored)")
    parts.append(f"{k[parse.OTHER]} not about our mail (left alone)")
    click.echo(f"Read {plural(s.messages, 'message')}: {', '.join(parts)}.")
    e = s.events
    click.echo(
        f"New: {e[HARD]} hard, {e[SOFT]} soft, {e[COMPLAINT]} complaint(s), "
        f"{e[SENDER]} refused for the sender's reasons"
        + (f"; {s.already} read before (nothing changed)" if s.already else "")
        + "."
    )
    if s.suppressed:
        click.echo(f"Suppressed {plural(len(s.suppressed), 'address', 'addresses')}:")
        for d in s.suppressed[:SHOW_MAX]:
            click.echo(f"  {d.email}: {d.reason} — {d.evidence}")
        if len(s.suppressed) > SHOW_MAX:
            click.echo(
                f"  … and {len(s.suppressed) - SHOW_MAX} more (newsletter recipients export)"
            )
    if s.address_only:
        click.echo(
            f"Tied by the address alone (counted once there are {cfg.bounces.address_only_limit}"
            f" on distinct alerts): {plural(len(s.address_only), 'report')}."
        )
    if s.unmatched:
        click.echo(f"Unmatched (no member found; nothing done): {len(s.unmatched)}", err=True)
        for label, address, why in s.unmatched[:SHOW_MAX]:
            click.echo(f"  {label}: {address or '(no address)'} {why}".rstrip(), err=True)
        if len(s.unmatched) > SHOW_MAX:
            click.echo(f"  … and {len(s.unmatched) - SHOW_MAX} more", err=True)
    if s.sender:
        click.echo("Refused for the sender's reasons (no member was suppressed for these):")
        for line in advice_lines(cfg, ((ev.remote, ev.category) for ev in s.sender)):
            click.echo(f"  {line}")


def status_lines(cfg: Config, journal: Journal, alert_id: str, sent: int) -> list[str]:
    """What `newsletter status ALERT` adds: bounces, complaints, unsubscribes, sender-side
    refusals, and the rates with their warnings."""
    by_kind = dict(
        journal._read(
            "SELECT kind, count(DISTINCT coalesce(nullif(key, ''), fingerprint)) FROM bounces "
            "WHERE alert_id = ? GROUP BY kind",
            (alert_id,),
        )
    )
    unsubscribed = journal._read(
        "SELECT count(*) FROM deliveries d JOIN suppressions s ON s.key = d.key "
        "WHERE d.alert_id = ? AND d.status = 'sent' AND s.kind = 'unsubscribed' "
        "AND s.created_at >= d.sent_at",
        (alert_id,),
    )[0][0]
    hard, soft = by_kind.get(HARD, 0), by_kind.get(SOFT, 0)
    complaints, refused = by_kind.get(COMPLAINT, 0), by_kind.get(SENDER, 0)
    lines = [
        f"After the send: {hard + soft} bounced ({hard} hard, {soft} soft), "
        f"{plural(complaints, 'complaint')}, {plural(unsubscribed, 'unsubscribe')}, "
        f"{refused} refused for the sender's reasons."
    ]
    if sent:
        c_rate, h_rate = complaints / sent, hard / sent
        lines.append(
            f"Rates over {sent} sent: complaints {c_rate:.2%} (keep under 0.1 %), "
            f"hard bounces {h_rate:.2%} (keep under 2 %)."
        )
        if c_rate >= COMPLAINT_LOUD:
            lines.append(
                click.style(
                    f"WARNING: complaints at {c_rate:.2%} reach Gmail's 0.3 % line: mail from "
                    "this domain will be sent to spam or refused. Send less often, only to people "
                    "who asked, and make unsubscribing easy.",
                    fg="red",
                    bold=True,
                )
            )
        elif c_rate >= COMPLAINT_WARN:
            lines.append(
                click.style(
                    f"warning: complaints at {c_rate:.2%} passed 0.1 %: stay well under 0.3 %.",
                    fg="yellow",
                )
            )
        if h_rate > HARD_WARN:
            lines.append(
                click.style(
                    f"warning: hard bounces at {h_rate:.2%} passed 2 %: the list holds dead "
                    "addresses (read the bounces; they are suppressed for the next alert).",
                    fg="yellow",
                )
            )
    if refused:
        rows = journal._read(
            "SELECT remote, category FROM bounces WHERE alert_id = ? AND kind = ?",
            (alert_id, SENDER),
        )
        lines.append("Refused for the sender's reasons (no member was suppressed for these):")
        lines += [f"  {line}" for line in advice_lines(cfg, rows)]
    return lines
