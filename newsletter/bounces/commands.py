"""`newsletter bounces read PATH…` and `newsletter bounces fetch`: the pipeline run over a mailbox.

Messages are taken in batches: each batch's events are recorded and its decisions applied in
the state file (committed, fsync'd) before anything else happens to those messages, so a run
stopped at any point loses nothing and the next run, reading the same messages, changes
nothing twice. Only then does `fetch` move the batch's processed messages to the done folder.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import click

from newsletter.bounces import parse, policy, report
from newsletter.bounces.classify import COMPLAINT, SENDER, classify
from newsletter.bounces.match import ADDRESS, NONE, Matcher
from newsletter.config import Config
from newsletter.journal import Journal
from newsletter.recipients import plural

BATCH = 500  # messages per transaction


@dataclass
class Summary:
    """What one read did, for the lines it prints and for tests."""

    messages: int = 0
    kinds: Counter = field(default_factory=Counter)  # parse kind -> messages
    events: Counter = field(default_factory=Counter)  # event kind -> new events
    already: int = 0  # events read before
    unmatched: list[tuple[str, str, str]] = field(default_factory=list)  # (where, address, why)
    address_only: list[str] = field(default_factory=list)  # members tied by address alone
    suppressed: list[policy.Decision] = field(default_factory=list)
    sender: list[policy.Event] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # labels of processed messages (moved by fetch)


class Reader:
    """Parse, classify, match and record messages through one journal, in batches."""

    def __init__(
        self,
        cfg: Config,
        journal: Journal,
        on_batch: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.matcher = Matcher(journal, cfg)
        self.summary = Summary()
        self.on_batch = on_batch  # gets the labels of a committed batch's processed messages
        self._events: list[policy.Event] = []
        self._labels: list[str] = []

    def add(self, label: str, data: bytes) -> parse.Report:
        r = parse.parse(data)
        s = self.summary
        s.messages += 1
        s.kinds[r.kind] += 1
        if r.kind in (parse.DSN, parse.BOUNCE, parse.COMPLAINT):
            for f in r.failures:
                self._events.append(self._event(label, r, f))
        if r.processed:
            self._labels.append(label)
        if len(self._labels) >= BATCH or len(self._events) >= BATCH:
            self.flush()
        return r

    def _event(self, label: str, r: parse.Report, f: parse.Failure) -> policy.Event:
        if r.kind == parse.COMPLAINT:
            kind, category = COMPLAINT, ""
        else:
            verdict = classify(f.status, f.diagnostic, f.temporary)
            kind, category = verdict.kind, verdict.category
        m = self.matcher.match(r.verp, r.message_ids, f.address)
        if m is None:
            self.summary.unmatched.append((label, f.address, f"{f.status} {f.diagnostic}".strip()))
        return policy.Event(
            fingerprint=policy.fingerprint(r.identity, f.address, kind),
            source="mail",
            kind=kind,
            key=m.key if m else "",
            contact_id=m.contact_id if m else None,
            alert_id=m.alert_id if m else None,
            matched_by=m.by if m else NONE,
            status=f.status,
            diagnostic=f.diagnostic,
            remote=f.remote or (m.key.rpartition("@")[2] if m else ""),
            category=category,
        )

    def flush(self) -> None:
        events, self._events = self._events, []
        labels, self._labels = self._labels, []
        s = self.summary
        new = policy.record(self.journal, events)
        s.already += len(events) - len(new)
        for e in new:
            s.events[e.kind] += 1
            if e.kind == SENDER:
                s.sender.append(e)
            elif e.matched_by == ADDRESS:
                s.address_only.append(e.key)
        contacts = [e.contact_id for e in new if e.contact_id and e.kind != SENDER]
        s.suppressed += policy.suppress(
            self.journal, policy.decide(self.journal, self.cfg.bounces, contacts)
        )
        s.done += labels
        if self.on_batch is not None:
            self.on_batch(labels)


def read_all(cfg: Config, journal: Journal, items: Iterable[tuple[str, bytes]]) -> Summary:
    """Read every (label, bytes) through one Reader; returns the summary."""
    reader = Reader(cfg, journal)
    for label, data in items:
        reader.add(label, data)
    reader.flush()
    return reader.summary


def run_read(cfg: Config, paths: tuple[str, ...]) -> Summary:
    """`newsletter bounces read PATH…`: files, Maildir folders, mbox files, `-` for stdin."""
    from newsletter.bounces.sources import read_paths

    with Journal(cfg.path("state"), secret=cfg.secret) as journal:
        summary = read_all(cfg, journal, read_paths(paths))
    report.print_summary(cfg, summary)
    return summary


def run_fetch(cfg: Config) -> Summary:
    """`newsletter bounces fetch`: the IMAP mailbox; processed messages go to the done folder."""
    from newsletter.bounces.sources import ImapMailbox

    with ImapMailbox(cfg) as box, Journal(cfg.path("state"), secret=cfg.secret) as journal:
        reader = Reader(
            cfg,
            journal,
            on_batch=lambda labels: box.move_done([label.encode() for label in labels]),
        )
        uids = box.uids()
        for uid in uids:
            data = box.fetch(uid)
            if data is not None:
                reader.add(uid.decode(), data)
        reader.flush()
        summary = reader.summary
    report.print_summary(cfg, summary)
    left = summary.messages - len(summary.done)
    click.echo(
        f"Moved {plural(len(summary.done), 'message')} to {cfg.bounces.done_folder!r}; "
        f"left {plural(left, 'other message')} in {cfg.bounces.imap_folder!r} as they were."
    )
    return summary
