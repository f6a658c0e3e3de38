"""A failure's status code and words -> what it means for the member: hard, soft, sender, complaint.

The order of the rules is the point. Refusals of the *sender* come first, whatever their code:
a 550 "5.7.1 ... listed at Spamhaus" says nothing about the member's address, and suppressing
members for it is the mistake bounce handlers are most blamed for. Then the address being gone
(5.1.x, the providers' "user unknown" wordings), then temporary trouble (4.x.x, full mailboxes,
expired retries, greylisting). A 5xx nothing recognises is counted as *soft*: it suppresses only
after `soft_limit` alerts, so an unknown wording cannot cost a member their membership at once.

Written by hand: no library here classifies by cause (flufl.bounce only says temporary or
permanent). The wordings come from RFC 3463's codes and from real bounces of Gmail, Outlook.com
and Office 365, Yahoo, Exim, Postfix, qmail and Sendmail (tests/fixtures/bounces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HARD = "hard"
SOFT = "soft"
SENDER = "sender"
COMPLAINT = "complaint"
KINDS = (HARD, SOFT, SENDER, COMPLAINT)

# Sender-side causes, each with the advice `bounces read` and `status` give.
ADVICE = {
    "authentication": "check SPF, DKIM and DMARC for {domain} (the From domain must align)",
    "blocklist": (
        "the sending server's IP or domain is on a blocklist or has a poor reputation: look up "
        "the relay's IP (e.g. on Spamhaus), ask for delisting, and keep complaints low"
    ),
    "content": (
        "refused as spam or for its content: check the links, the text part and the size; "
        "send a --test copy to a mailbox there"
    ),
    "rate": "too many messages too fast: lower [smtp] rate or connections, and send again later",
    "relay": (
        "the relay refused to pass the mail on: check [smtp] username and password, and that "
        "the relay lets {domain} send"
    ),
    "policy": "refused by the receiver's policy: read the diagnostic (often reputation)",
}

_SENDER_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "authentication",
        re.compile(
            r"\bspf\b|\bdkim\b|\bdmarc\b|5\.7\.515|"
            r"unauthenticated|authentication (?:failed|required|check)|not authenticated|"
            r"sender (?:domain )?(?:not )?(?:verified|aligned)|fails? (?:to )?(?:pass|authenticat)|"
            r"5\.7\.(?:23|24|25|26|27)\b|alignment",
            re.I,
        ),
    ),
    (
        "blocklist",
        re.compile(
            r"block ?list|black ?list|\bdnsbl\b|\brbl\b|spamhaus|spamcop|barracuda|sorbs|"
            r"(?<!not )\blisted\b|reputation|\bS3150\b|\bS3140\b|\bS3114\b|poor reputation|"
            r"ip (?:address )?(?:is )?blocked|your (?:ip|server|network).*(?:block|ban)|"
            r"banned sending|client host .* blocked|rejected .* blocked using|"
            r"bl\.spamcop|zen\.spamhaus|\bpbl\b|\bsbl\b|\bxbl\b|reverse dns|\bptr\b|rdns|"
            r"not accepting mail from",
            re.I,
        ),
    ),
    (
        "rate",
        re.compile(
            r"rate limit|rate-limit|too many (?:messages|connections|recipients|emails)|"
            r"throttl|4\.7\.28\b|temporarily deferred|try again later.*(?:rate|volume)|"
            r"unusual rate|sending limit|exceeded .*limit|limit exceeded",
            re.I,
        ),
    ),
    (
        "relay",
        re.compile(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)|unable to relay|"
            r"not permitted to relay|relay not permitted|we do not relay|5\.7\.64\b",
            re.I,
        ),
    ),
    (
        "content",
        re.compile(
            r"\bspam\b|junk|content (?:filter|rejected|policy)|message (?:content )?rejected|"
            r"virus|malware|phish|suspicious|unsolicited|5\.7\.9\b|5\.7\.350\b|"
            r"message (?:size|too (?:big|large))|size exceeds|5\.3\.4\b|url.*(?:block|listed)",
            re.I,
        ),
    ),
]

_HARD_TEXT = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient|address|account|domain)|"
    r"(?:mailbox|account|address|recipient|user)(?: name)? (?:does not|doesn't|did not) exist|"
    r"does not exist|doesn't exist|not exist|invalid (?:recipient|mailbox|address|user)|"
    r"unknown (?:recipient|mailbox|local[- ]part|address)|recipient (?:address )?rejected|"
    r"(?:mailbox|user|recipient|address) (?:not found|unavailable|is not valid|invalid)|"
    r"recipientnotfound|account (?:has been )?(?:disabled|deactivated|closed|suspended|"
    r"terminated|deleted|expired|inactive)|inactive (?:user|account|mailbox)|"
    r"disabled (?:user|account|mailbox)|no longer (?:active|available|in use|valid|exists?)|"
    r"not (?:a )?valid (?:mailbox|recipient|user)|unrouteable|unroutable|"
    r"host (?:or domain name )?not found|domain (?:not found|does not exist)|nxdomain|"
    r"no mx|bad destination|addressee unknown|not our customer|is not a valid|"
    r"mailbox (?:is )?(?:disabled|not available)|undeliverable address|"
    r"the email account that you tried to reach does not exist|"
    r"doesn't have a \S+ account|this user doesn't have|has moved|no mailbox here|"
    r"unknown host|name is not recognized|not recognized|account .*(?:disabled|discontinued)|discontinued",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a failure means: kind, and for the sender's side the cause (an ADVICE key)."""

    kind: str
    category: str = ""

    def advice(self, domain: str) -> str:
        """The advice for a sender-side refusal, with the sender's domain filled in."""
        return ADVICE.get(self.category, "").format(domain=domain or "your domain")


def classify(status: str, diagnostic: str, temporary: bool = False) -> Verdict:
    """Decide from the status code (5.1.1, 550, …) and the server's words."""
    text = f"{status} {diagnostic}"
    code = status.strip()
    # 5.1.x and 5.2.1 say "this address" in the code itself, even beside a policy word
    # ("550 5.1.1 ... rejected by policy: no such user"): settle the clear cases first.
    if re.fullmatch(r"5\.1\.(?:1|2|3|6|10)", code) or (
        code.startswith("5.1.") and _HARD_TEXT.search(diagnostic)
    ):
        return Verdict(HARD)
    for category, pattern in _SENDER_RULES:
        if pattern.search(text):
            # "No such user ... (relay denied)" is about the address: the address wins over
            # the weaker causes; a blocklist or failed authentication never does.
            if category in ("content", "relay") and _HARD_TEXT.search(diagnostic):
                break
            return Verdict(SENDER, category)
    if re.fullmatch(r"5\.7\.\d+", code) and not _HARD_TEXT.search(diagnostic):
        return Verdict(SENDER, "policy")
    if (
        code.startswith("5.2.2")
        or code.startswith("4.2.2")
        or re.search(
            r"quota|mailbox (?:is )?full|over ?quota|insufficient storage", diagnostic, re.I
        )
    ):
        return Verdict(SOFT)
    if code.startswith("5.") and code != "5.0.0" and code[:4] in ("5.2.", "5.3.", "5.4.", "5.5."):
        if code in ("5.2.1", "5.4.1", "5.4.4") or _HARD_TEXT.search(diagnostic):
            return Verdict(HARD)
        return Verdict(SOFT)
    if _HARD_TEXT.search(diagnostic) and not (temporary or code.startswith("4")):
        return Verdict(HARD)
    # Temporary trouble (4xx, full, expired, greylisted) and whatever nothing recognised:
    # counted, slowly (see the module's docstring).
    return Verdict(SOFT)
