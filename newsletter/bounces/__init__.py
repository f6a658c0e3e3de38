"""After the send: bounces, complaints and refusals feed the suppression list.

The shape of listmonk's internal/bounce: sources, parsing and the decision apart, each testable
alone, in the order a message goes through them:

    sources   where messages come from: files, Maildir, mbox, stdin; an IMAP mailbox over TLS
    parse     one message's bytes -> Report: RFC 3464 DSN, RFC 5965 ARF, RFC 3834 auto-reply,
              the non-standard formats (flufl.bounce's detectors), or not a bounce at all
    classify  a failure's status and diagnostic -> hard | soft | sender | complaint (+ advice)
    match     which member and which alert: the VERP token, else our Message-ID in the returned
              headers, else the failed address (which counts only after `address_only_limit`)
    policy    the events recorded (idempotent) and the decision: who is suppressed, and why
    report    the summary of a read, the sender-side advice, the lines `status` adds
    commands  `newsletter bounces read` / `fetch`

Send-time 5xx refusals enter the same way (policy.record_send_failures), after a send.
"""
