"""What real clients are known to do in a cell of the explain table, where some differ from the
well-behaved model client (issue 21: measured with 15 clients in every setting). Each fact names
the clients; those marked "(checked in CI)" are proved by a test that drives that client here:
tests/explain (imaplib, msmtp, openssl s_client, curl) and tests/journal (mutt, nodemailer,
imapflow, swaks, getmail6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailmodes.probe.explain import ClientSetting, Target

CERTIFICATE_SCENARIO_PREFIX = "cert-"

# (protocol or "*", listener TLS mode, client setting) -> what real clients do there.
KNOWN: dict[tuple[str, str, str], str] = {
    ("imap", "starttls-required", "none"):
        "imaplib (checked in CI), imapclient, imap_tools and getmail6 send LOGIN with the password anyway, "
        "ignoring LOGINDISABLED: the server refuses, but the password has crossed the wire",
    ("pop3", "starttls-required", "none"):
        "poplib and 3 other clients of 15 send USER (the name, not yet the password) before the refusal",
    ("smtp", "starttls-required", "none"):
        "curl tries MAIL anyway and gets 530 (checked in CI): the message itself would have gone in the clear",
    ("smtp", "plaintext", "none"):
        "most clients log in in the clear here; msmtp refuses to send the password unencrypted (checked in CI)",
    ("*", "starttls-optional", "none"):
        "most clients log in in the clear here; msmtp refuses to send the password unencrypted (checked in CI)",
    ("smtp", "plaintext", "starttls-required"):
        "mutt, neomutt, nodemailer and openssl s_client -starttls (checked in CI) send STARTTLS although it is "
        "not advertised, and fail on the refusal",
    ("imap", "plaintext", "starttls-required"):
        "fetchmail and openssl s_client -starttls (checked in CI) send STARTTLS although it is not advertised, "
        "and fail: a client set to STARTTLS never works here",
    ("pop3", "plaintext", "starttls-required"):
        "fetchmail and openssl s_client -starttls (checked in CI) send STLS although it is not advertised, and fail",
    ("*", "starttls-optional", "starttls-if-available"):
        "works here; but where a box on the path deletes STARTTLS (scenario starttls-stripped) this same setting "
        "sends the password in the clear: curl --ssl, nodemailer's and imapflow's defaults (checked in CI)",
}

CERTIFICATE: dict[str, str] = {
    "implicit": "mutt and neomutt stop and ask the user (mutt in batch mode refuses, checked in CI); libraries "
                "given no CA context, fetchmail without --sslcertck and swaks without --tls-verify carry on "
                "(checked in CI for swaks and nodemailer with rejectUnauthorized: false)",
}


def real_clients_here(target: Target, setting: ClientSetting) -> str:
    """What real clients are known to do in this cell beyond what the model does ("" if nothing)."""
    if target.scenario and target.scenario.startswith(CERTIFICATE_SCENARIO_PREFIX) and str(setting) == "implicit":
        return CERTIFICATE["implicit"]
    if target.scenario:
        return ""
    return KNOWN.get((target.protocol, target.mode, str(setting))) or KNOWN.get(("*", target.mode, str(setting)), "")
