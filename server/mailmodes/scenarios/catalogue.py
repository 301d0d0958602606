"""The certificate and TLS scenarios ("badssl.com for mail"), KNOWN-BAD.md section 1.

A scenario is one server-side TLS context: a listener with `scenario = "<id>"` uses it for
implicit TLS and for STARTTLS alike, and certificate scenarios can also be chosen by the SNI name
`<label>.<hostname>` (see `scenario_for_sni`). Each context has exactly one flaw; everything else
is the known-good setup of tls.server_context and certs.py, so a client that refuses it refuses
it for that flaw.

Only certificate scenarios can be chosen by SNI: OpenSSL lets the SNI callback swap the
certificate (and the security level that travels with it), but the protocol versions and the
cipher list stay those of the listener's context (SSL_set_SSL_CTX copies neither). cert-cn-only
is not chosen by SNI either: its one name, in the CN, is the configured host name.

Which client name meets only the intended flaw: the configured host name (or localhost, or
127.0.0.1), except for the two wildcard scenarios, whose name is their SNI name (`client_name`).

This module is the catalogue, data only (no cryptography; of mailmodes only the protocol names,
TlsMode and misbehaviour's table): the config check, the journal, the pytest plugin and the
certificate builder (badcerts.py) all read it, and contexts.py turns an entry into an SSLContext.
The port plan of config/known-bad.toml is derived from it too (`known_bad_config`).
"""

from __future__ import annotations

import json

import shutil
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mailmodes.protocols import PROTOCOLS
from mailmodes.scenarios.misbehaviour import PROTOCOL_SCENARIOS
from mailmodes.tls.policy import TlsMode

WRONG_HOST = "wrong.host.invalid"
# cert-idn: bücher.<hostname>, whose A-label (RFC 5891, Python's "idna" codec) this is.
IDN_HOST_LABEL = "xn--bcher-kva"
IDN_HOST_ULABEL = "bücher"

# Python's own default cipher list (Modules/_ssl.c, PY_SSL_DEFAULT_CIPHER_STRING) minus its
# @SECLEVEL=2, so that a scenario which must lower the level changes nothing else.
PYTHON_DEFAULT_CIPHERS = "ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM"


@dataclass(frozen=True)
class Scenario:
    id: str                      # "cert-expired"
    kind: str                    # "certificate" | "tls" (section 2 kinds come later: "starttls", ...)
    protocols: tuple[str, ...]   # ("smtp", "imap", "pop3")
    server_does: str             # one line: what the server presents
    correct_client: str          # one line: what a correct client does
    bad_certificate: bool        # True where completing the handshake is the client's fault
    sni_label: str | None        # "expired" -> chosen by SNI "expired.<hostname>"; None if not by SNI
    buildable: bool = True
    why_not: str = ""            # reason when not buildable here

    @property
    def section(self) -> int:
        """KNOWN-BAD.md section 1 (certificates and TLS) or 2 (STARTTLS and protocol behaviour)."""
        return 1 if self.kind in ("certificate", "tls") else 2


# Certificates that are bad only to a client that asks for their status (RFC 6066 status_request):
# one that never asks completes the handshake with no fault of its own.
REVOCATION_SCENARIOS = frozenset({"cert-revoked"})


@dataclass(frozen=True)
class TlsSettings:
    """How a scenario's context differs from the known-good one (TLS 1.2+, Python's ciphers)."""

    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ciphers: str | None = None
    dh1024: bool = False
    client_certificate: bool = False  # require one from the project CA


TLS12 = ssl.TLSVersion.TLSv1_2
SETTINGS: dict[str, TlsSettings] = {
    # OpenSSL 3 security level 2 refuses to load a 1024-bit key ("ee key too small"); level 1
    # allows 80-bit security, i.e. RSA 1024.
    "cert-rsa1024": TlsSettings(ciphers=f"{PYTHON_DEFAULT_CIPHERS}:@SECLEVEL=1"),
    # OpenSSL 3 rates SHA-1 signatures below 80 bits: only level 0 loads the certificate.
    "cert-sha1-signature": TlsSettings(ciphers=f"{PYTHON_DEFAULT_CIPHERS}:@SECLEVEL=0"),
    # TLS 1.0/1.1 sign the handshake with MD5+SHA-1, which OpenSSL 3 allows at level 0 only.
    "tls-v1-0": TlsSettings(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1, "DEFAULT:@SECLEVEL=0"),
    "tls-v1-1": TlsSettings(ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0"),
    "tls-v1-2-only": TlsSettings(TLS12, TLS12),
    "tls-v1-3-only": TlsSettings(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
    # Authenticated but unencrypted suites (RFC 7525 section 4.2 forbids them); no anonymous ones.
    "tls-null-cipher": TlsSettings(TLS12, TLS12, "NULL-SHA256:eNULL:!aNULL:@SECLEVEL=0"),
    # Ephemeral DH over a 1024-bit group only (Logjam; RFC 7525 section 4.1 wants 2048 bits).
    "tls-dh1024": TlsSettings(TLS12, TLS12, "kDHE+aRSA:!aNULL:!eNULL:@SECLEVEL=1", dh1024=True),
    # RSA key transport: no forward secrecy (RFC 7525 section 4.2 prefers (EC)DHE); TLS 1.3 has none.
    "tls-static-rsa": TlsSettings(TLS12, TLS12, "AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256"),
    # CBC with HMAC-SHA1 (Lucky13-class padding oracles, RFC 7457 section 2.8).
    "tls-cbc-sha1": TlsSettings(TLS12, TLS12, "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-SHA:AES256-SHA"),
    # OpenSSL 3 refuses to load a chain certificate with a SHA-1 signature above level 0, too.
    "cert-sha1-intermediate": TlsSettings(ciphers=f"{PYTHON_DEFAULT_CIPHERS}:@SECLEVEL=0"),
    "tls-client-cert-required": TlsSettings(client_certificate=True),
}


def _ciphers_available(spec: str) -> bool:
    """Whether this OpenSSL build has any TLS 1.2 suite matching spec."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(spec)
    except ssl.SSLError:
        return False
    return any(c["protocol"] != "TLSv1.3" for c in context.get_ciphers())


def _certificate(scenario_id: str, server_does: str, correct_client: str, *, bad: bool = True,
                 by_sni: bool = True) -> Scenario:
    label = scenario_id.removeprefix("cert-") if by_sni else None
    return Scenario(scenario_id, "certificate", PROTOCOLS, server_does, correct_client, bad, label)


def _tls(scenario_id: str, server_does: str, correct_client: str, why_not: str = "") -> Scenario:
    return Scenario(scenario_id, "tls", PROTOCOLS, server_does, correct_client, False, None, not why_not, why_not)


def _catalogue() -> dict[str, Scenario]:
    """Every section-1 id in a fixed order: the port plan (config/known-bad.toml) numbers them by
    position, so new ids go at the end."""
    has_openssl = shutil.which("openssl") is not None
    has_null = _ciphers_available("NULL-SHA256:eNULL:!aNULL:@SECLEVEL=0")
    weak_suites = "this OpenSSL is built without enable-weak-ssl-ciphers (set_ciphers finds no {}, even at @SECLEVEL=0)"
    scenarios = [
        _certificate("cert-expired", "leaf from the project CA whose notAfter is 30 days in the past",
                     "refuses: certificate has expired (alert certificate_expired)"),
        _certificate("cert-not-yet-valid", "leaf from the project CA whose notBefore is a year in the future",
                     "refuses: certificate is not yet valid (OpenSSL sends alert bad_certificate)"),
        _certificate("cert-wrong-host", f"leaf for {WRONG_HOST} only",
                     "refuses: host name mismatch (RFC 7817 section 3, RFC 6125; alert bad_certificate)"),
        _certificate("cert-self-signed", "self-signed leaf for the host name",
                     "refuses: self-signed certificate (alert unknown_ca)"),
        _certificate("cert-untrusted-root", "leaf plus the root of a second CA the client was never given",
                     "refuses: self-signed certificate in chain (alert unknown_ca)"),
        _certificate("cert-incomplete-chain", "leaf from an intermediate of the project CA, intermediate not sent",
                     "refuses: unable to get local issuer certificate (alert unknown_ca)"),
        _certificate("cert-wildcard-apex", "only *.wildcard-apex.<hostname>: connect as wildcard-apex.<hostname>",
                     "refuses: a wildcard never matches its apex (RFC 6125 section 6.4.3)"),
        _certificate("cert-wildcard-multilabel",
                     "only *.<parent of hostname>: connect as wildcard-multilabel.<hostname>",
                     "refuses: * matches one label only (RFC 6125 section 6.4.3)"),
        _certificate("cert-cn-only", "host name only in the subject CN, no subjectAltName",
                     "may accept (RFC 7817 section 3 allows CN-ID); reported as info", bad=False, by_sni=False),
        _certificate("cert-rsa1024", "1024-bit RSA leaf from the project CA (server at security level 1)",
                     "refuses: EE key too weak (RFC 7525 section 4.5 wants 2048 bits; alert bad_certificate)"),
        Scenario("cert-sha1-signature", "certificate", PROTOCOLS,
                 "leaf the project CA signed with SHA-1 (server at security level 0)",
                 "refuses: CA signature digest too weak (SHA-1 collisions, RFC 9155; alert bad_certificate)", True, "sha1-signature",
                 has_openssl, "" if has_openssl else "needs the openssl command to sign with SHA-1; not installed"),
        _tls("tls-v1-0", "TLS 1.0 only", "refuses (RFC 8996; RFC 8314 section 5: TLS 1.2 minimum)",
             "" if ssl.HAS_TLSv1 else "this OpenSSL has no TLS 1.0"),
        _tls("tls-v1-1", "TLS 1.1 only", "refuses (RFC 8996; RFC 8314 section 5: TLS 1.2 minimum)",
             "" if ssl.HAS_TLSv1_1 else "this OpenSSL has no TLS 1.1"),
        _tls("tls-v1-2-only", "TLS 1.2 only (known-good)", "connects with TLS 1.2"),
        _tls("tls-v1-3-only", "TLS 1.3 only (known-good)", "connects with TLS 1.3"),
        _tls("tls-null-cipher", "TLS 1.2 with NULL (unencrypted) suites only",
             "refuses: no shared cipher (RFC 7525 section 4.1)",
             "" if has_null else "this OpenSSL has no NULL cipher suites"),
        _tls("tls-dh1024", "TLS 1.2, DHE suites only, over a 1024-bit group (RFC 2409 Oakley group 2)",
             "refuses: DH key too small (Logjam; RFC 7525 section 4.1)"),
        _tls("tls-static-rsa", "TLS 1.2, RSA key transport suites only (no forward secrecy)",
             "refuses or warns: dubious, many clients still accept it"),
        _tls("tls-cbc-sha1", "TLS 1.2, CBC suites with HMAC-SHA1 only",
             "refuses or warns: dubious, many clients still accept it"),
        _tls("tls-sslv2", "SSL 2.0 only", "refuses (RFC 6176)",
             "OpenSSL removed SSL 2.0 in 1.1.0; Python's ssl cannot offer it"),
        _tls("tls-sslv3", "SSL 3.0 only", "refuses (RFC 7568)",
             "Debian builds OpenSSL without SSL 3.0 (ssl.HAS_SSLv3 is False)"),
        _tls("tls-rc4", "RC4 suites", "refuses (RFC 7465)", weak_suites.format("RC4-SHA")),
        _tls("tls-3des", "3DES suites", "refuses (Sweet32)", weak_suites.format("DES-CBC3-SHA")),
        _tls("tls-dh512", "DHE over a 512-bit group (Logjam export grade)", "refuses",
             "OpenSSL 3 refuses to load 512-bit DH parameters (dh key too small) even at @SECLEVEL=0"),
        *(scenario for scenario in _protocol_scenarios() if scenario.id not in LATER_PROTOCOL_SCENARIOS),
        # Section 1 again (issue 20): after section 2, whose port numbers were published first.
        _certificate("cert-ecdsa-only", "ECDSA P-256 leaf from the project CA, no RSA certificate",
                     "connects (ECDSA suites, or TLS 1.3); a client offering RSA signatures only fails: "
                     "no shared signature algorithm", bad=False),
        _certificate("cert-rsa8192", "8192-bit RSA leaf from the project CA",
                     "connects (a slower handshake); a client with an RSA size cap below 8192 bits refuses",
                     bad=False),
        _certificate("cert-1000-sans", "leaf with 1,000 subjectAltNames, the client's own name among the last",
                     "connects; a client with a small name or certificate size limit fails", bad=False),
        Scenario("cert-sha1-intermediate", "certificate", PROTOCOLS,
                 "SHA-256 leaf from an intermediate the project CA signed with SHA-1, both sent (server at "
                 "security level 0)",
                 "refuses: CA signature digest too weak, for the intermediate (RFC 9155; alert bad_certificate)",
                 True, "sha1-intermediate", has_openssl,
                 "" if has_openssl else "needs the openssl command to sign with SHA-1; not installed"),
        _certificate("cert-no-subject", "leaf with an empty subject, its names only in a critical subjectAltName",
                     "connects: RFC 5280 section 4.1.2.6 allows it, the names are in the SAN", bad=False),
        Scenario("cert-idn", "certificate", PROTOCOLS,
                 f"leaf only for {IDN_HOST_LABEL}.<hostname>: connect as {IDN_HOST_ULABEL}.<hostname>",
                 f"connects: sends and matches the A-label {IDN_HOST_LABEL} (RFC 5891; RFC 6125 section 6.4.2)",
                 False, IDN_HOST_LABEL),
        _certificate("cert-revoked", "leaf and the project CA, with a stapled OCSP response (RFC 6960) saying "
                     "revoked (keyCompromise)",
                     "refuses: certificate revoked, when it asks for the status (curl --cert-status: 91); a "
                     "client that never asks cannot know"),
        _tls("tls-client-cert-required", "requires a client certificate from the project CA",
             "without one: stops and says the server wants a certificate (TLS 1.3 alert certificate_required); "
             "with one from the project CA: connects"),
    ]
    # Section 2 ids added after section 1's later ones: numbered last, so no port moves.
    scenarios += [scenario for scenario in _protocol_scenarios() if scenario.id in LATER_PROTOCOL_SCENARIOS]
    return {scenario.id: scenario for scenario in scenarios}


LATER_PROTOCOL_SCENARIOS = ("sasl-plus-stripped", "oauth-expired-accepted")


# KNOWN-BAD.md section 2: (what the server does, what a correct client does). The behaviour
# itself lives in misbehaviour.py; this is the catalogue entry.
PROTOCOL_DESCRIPTIONS = {
    "starttls-stripped": ("STARTTLS not advertised, plaintext login offered; STARTTLS if sent anyway: 502 / NO / -ERR",
                          "set to STARTTLS or TLS: aborts before sending credentials"),
    "starttls-rejected": ("STARTTLS advertised but refused: SMTP 502, IMAP NO, POP3 -ERR", "aborts"),
    "starttls-tempfail": ("STARTTLS refused for now: SMTP 454 4.7.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]",
                          "aborts (no plaintext fallback)"),
    "starttls-unexpected-reply": ("STARTTLS answered neither yes nor no: SMTP 354, IMAP + continue, POP3 +Okay",
                                  "aborts: only exactly 220 / tagged OK / +OK starts TLS"),
    "starttls-no-handshake": ("success line, then plaintext answers the ClientHello", "aborts, does not fall back"),
    "starttls-dropped": ("success line, then the connection closed when the ClientHello arrives",
                         "aborts, does not fall back"),
    "starttls-silence": ("success line, then never answers the ClientHello", "times out and closes"),
    "capability-fails": ("EHLO / CAPABILITY / CAPA answered with an error",
                         "still insists on STARTTLS or aborts (CVE-2021-22946)"),
    "protocol-downgrade": ("EHLO refused so HELO is used; IMAP says IMAP4, not IMAP4rev1; no STARTTLS", "aborts"),
    "imap-preauth": ("plaintext greeting * PREAUTH", "closes at once (RFC 9051 section 7.1.4)"),
    "response-injection": ("extra responses right after the STARTTLS success line, in the same write, with the "
                           "canary mechanism X-MAILMODES-INJECTED", "discards them; never uses the canary"),
    "injected-bye": ("* BYE right after the STARTTLS OK, in the same write", "ignores it, completes TLS"),
    "stale-capability": ("the canary mechanism X-MAILMODES-PRETLS advertised only before TLS",
                         "asks for capabilities again after TLS; never uses the canary"),
    "pretls-state-injection": ("untagged LIST / EXISTS / STATUS for a canary mailbox before TLS",
                               "ignores them; never selects the canary mailbox"),
    "pretls-alert": ("* OK [ALERT] / +OK [SYS/PERM] text before TLS", "does not show it as the server's word"),
    "premature-tagged-ok": ("tagged OKs for tags the client has not used yet", "errors out"),
    "greeting-invalid": ("a malformed greeting", "closes, never authenticates (CVE-2020-28896)"),
    "greeting-reject": ("* BYE / -ERR / 554 greeting", "stops"),
    "login-referral": ("LOGIN answered NO [REFERRAL imap://...]", "never follows it to another host"),
    "implicit-speaks-plaintext": ("an implicit-TLS port that answers in plaintext", "refuses"),
    "command-injection-vulnerable": ("a vulnerable server: plaintext pipelined behind STARTTLS is executed inside "
                                     "TLS (CVE-2011-0411); teaching only", "sends nothing behind STARTTLS"),
    "chaos": ("a chosen reply or a disconnect at a chosen stage, or a delay per reply ([listeners.chaos])",
              "handles it cleanly"),
    "sasl-plus-stripped": ("the -PLUS mechanisms (SCRAM with channel binding) left out of the list, as a man in "
                           "the middle would; still supported, so a gs2 flag y is refused (RFC 5802 section 6)",
                           "binds anyway (-PLUS) or says it could (gs2 flag y), never logs in unbound (n)"),
    "oauth-expired-accepted": ("XOAUTH2 / OAUTHBEARER accept an expired bearer token (a broken resource server)",
                               "never sends a token past its expiry: refreshes it first (RFC 6749 section 6)"),
}
# The SASL scenarios' listeners offer what they test (config/known-bad.toml and the tests).
SCENARIO_MECHANISMS = {
    "sasl-plus-stripped": ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"),
    "oauth-expired-accepted": ("PLAIN", "XOAUTH2", "OAUTHBEARER"),
}


def _protocol_scenarios() -> list[Scenario]:
    kinds = {"chaos": "chaos", "imap-preauth": "protocol", "greeting-invalid": "protocol",
             "greeting-reject": "protocol", "login-referral": "protocol", "protocol-downgrade": "protocol",
             "capability-fails": "protocol", "premature-tagged-ok": "protocol",
             "sasl-plus-stripped": "auth", "oauth-expired-accepted": "auth"}
    return [
        Scenario(scenario_id, kinds.get(scenario_id, "starttls"), protocols, *PROTOCOL_DESCRIPTIONS[scenario_id],
                 bad_certificate=False, sni_label=None)
        for scenario_id, protocols in PROTOCOL_SCENARIOS.items()
    ]


SCENARIOS: dict[str, Scenario] = _catalogue()


def sni_name(scenario_id: str, hostname: str) -> str:
    """The name that chooses a certificate scenario by SNI: "cert-expired" -> expired.<hostname>."""
    known = SCENARIOS.get(scenario_id)
    label = known.sni_label if known is not None and known.sni_label else scenario_id.removeprefix("cert-")
    return f"{label}.{hostname}"


def client_name(scenario_id: str, hostname: str) -> str:
    """The name a client should connect to (and verify) to meet the scenario's one flaw."""
    if scenario_id in ("cert-wildcard-apex", "cert-wildcard-multilabel"):
        return sni_name(scenario_id, hostname)
    if scenario_id == "cert-idn":
        return f"{IDN_HOST_ULABEL}.{hostname}"  # what a user types; the client must send the A-label
    return hostname


def scenario_for_sni(server_name: str | None, hostname: str) -> str | None:
    """"expired.mail.example.test" -> "cert-expired"; None unless it names a subdomain of hostname
    whose first label is a buildable scenario's sni_label."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    suffix = "." + hostname.lower().rstrip(".")
    if not name.endswith(suffix):
        return None
    label = name.removesuffix(suffix)
    for scenario in SCENARIOS.values():
        if scenario.buildable and scenario.sni_label == label:
            return scenario.id
    return None


class PlacedListener(Protocol):
    """What listener_ports reads of a listener: config.Listener has it. The config check imports
    this catalogue for the scenario ids, so the catalogue must not import config back."""

    @property
    def name(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tls(self) -> TlsMode: ...
    @property
    def scenario(self) -> str | None: ...


def listener_ports(listeners: Iterable[PlacedListener],
                   ports: dict[str, int] | None = None) -> dict[str, list[tuple[str, int]]]:
    """{scenario: [(protocol, port), ...]} for describe(), implicit-TLS ports before STARTTLS ones.

    `ports` (listener name -> bound port, as MailServer.ports) overrides the configured numbers.
    """
    result: dict[str, list[tuple[str, int]]] = {}
    ordered = sorted(listeners, key=lambda listener: listener.tls is not TlsMode.IMPLICIT)
    for listener in ordered:
        if listener.scenario is not None:
            port = (ports or {}).get(listener.name, listener.port)
            result.setdefault(listener.scenario, []).append((listener.protocol, port))
    return result


def describe(listener_ports: dict[str, list[tuple[str, int]]] | None = None) -> str:
    """The table `mailmodes scenarios` prints: every id, its ports (implicit/STARTTLS per
    protocol, when given), what the server does and what a correct client does."""
    lines = [
        "Scenarios: chosen per listener (scenario = \"<id>\"); certificate ones also by SNI <label>.<hostname>.",
        "Ports per protocol: implicit TLS / STARTTLS.",
    ]
    # Section 1 first, though its later ids follow section 2 in the catalogue (port plan order).
    buildable = sorted((s for s in SCENARIOS.values() if s.buildable), key=lambda s: s.section)
    width = max(len(s.id) for s in SCENARIOS.values())
    headings = {"certificate": "Certificate and TLS scenarios (KNOWN-BAD.md section 1)",
                "starttls": "STARTTLS and protocol scenarios (KNOWN-BAD.md section 2)"}
    heading = None
    for scenario in buildable:
        section = headings["certificate" if scenario.section == 1 else "starttls"]
        if section != heading:
            heading = section
            lines += ["", heading]
        head = [scenario.id.ljust(width)]
        if listener_ports is not None:
            head.append(_ports(listener_ports.get(scenario.id, [])))
        if scenario.sni_label:
            head.append(f"SNI {scenario.sni_label}.<hostname>")
        lines.append("  ".join(head).rstrip())
        if scenario.protocols != PROTOCOLS:
            lines.append(f"    protocols:      {', '.join(scenario.protocols)}")
        lines.append(f"    server does:    {scenario.server_does}")
        lines.append(f"    correct client: {scenario.correct_client}")
    unbuildable = [s for s in SCENARIOS.values() if not s.buildable]
    if unbuildable:
        lines += ["", "Not buildable here:"]
        lines += [f"{s.id.ljust(width)}  {s.server_does}: {s.why_not}" for s in unbuildable]
    return "\n".join(lines) + "\n"


def _ports(entries: list[tuple[str, int]]) -> str:
    if not entries:
        return "(no listener)".ljust(50)
    by_protocol: dict[str, list[str]] = {}
    for protocol, port in entries:
        by_protocol.setdefault(protocol, []).append(str(port))
    return "  ".join(f"{protocol} {'/'.join(ports)}" for protocol, ports in by_protocol.items()).ljust(50)


# --- config/known-bad.toml: every scenario at once, on a stable port plan -------------------------

KNOWN_BAD_COMMAND = "mailmodes scenarios --known-bad-config > config/known-bad.toml"
PLAN_MODES = (TlsMode.IMPLICIT, TlsMode.STARTTLS_REQUIRED)
STANDARD_PORTS = {"smtp": (465, 587), "imap": (993, 143), "pop3": (995, 110)}  # (implicit, STARTTLS)
# A temporary failure at a stage every client reaches, so chaos shows without a client script.
PLAN_CHAOS = {
    "smtp": ("RCPT", "451 4.3.0 Temporary failure (mailmodes chaos)"),
    "imap": ("LOGIN", "NO [UNAVAILABLE] Temporary failure (mailmodes chaos)"),
    "pop3": ("RETR", "-ERR [SYS/TEMP] Temporary failure (mailmodes chaos)"),
}


def plan_port(protocol: str, mode: TlsMode, index: int) -> int:
    """11000 + i for SMTP implicit TLS, 12000 + i for SMTP STARTTLS, then IMAP from 13000 and
    POP3 from 15000: no root needed, and below Linux's ephemeral range (32768 up), so an outgoing
    connection never holds one of them."""
    return 11000 + 2000 * PROTOCOLS.index(protocol) + 1000 * PLAN_MODES.index(mode) + index


def plan_modes(scenario: Scenario) -> tuple[TlsMode, ...]:
    """Section 1 on both kinds of TLS port; section 2 on the STARTTLS one, where its misbehaviour
    shows (implicit-speaks-plaintext: the implicit one). No port for the TLS scenarios without
    SETTINGS, which Debian's OpenSSL 3 and Python cannot offer: `buildable` would make the plan
    depend on the machine that generates it."""
    if scenario.kind == "tls" and scenario.id not in SETTINGS:
        return ()
    if scenario.section == 1:
        return PLAN_MODES
    return (TlsMode.IMPLICIT,) if scenario.id == "implicit-speaks-plaintext" else (TlsMode.STARTTLS_REQUIRED,)


def known_bad_config() -> str:
    """config/known-bad.toml, byte for byte: `mailmodes scenarios --known-bad-config` prints it."""
    parts = [KNOWN_BAD_HEAD.format(command=KNOWN_BAD_COMMAND, bases="\n".join(_plan_bases()),
                                   table="\n".join(_plan_table()))]
    section = 1
    for index, scenario in enumerate(SCENARIOS.values()):
        modes = plan_modes(scenario)
        if not modes:
            continue
        if scenario.section != section:
            section = scenario.section
            parts.append(SECTION_2_RULE if section == 2 else SECTION_1_MORE_RULE)
        elif section == 2:
            parts.append("\n")  # fewer listeners per scenario here: a wider gap shows where each begins
        parts.append(f"# {index}: {scenario.id}: {scenario.server_does}\n")
        parts += [_plan_listener(scenario, protocol, mode, index) for protocol in scenario.protocols for mode in modes]
    return "".join(parts).removesuffix("\n")


def _plan_listener(scenario: Scenario, protocol: str, mode: TlsMode, index: int) -> str:
    kind = "implicit" if mode is TlsMode.IMPLICIT else "starttls"
    lines = [
        "[[listeners]]",
        f'name = "{scenario.id}-{protocol}-{kind}"',
        f'protocol = "{protocol}"',
        f"port = {plan_port(protocol, mode, index)}",
        f'tls = "{mode}"',
        *(['role = "submission"'] if protocol == "smtp" else []),
        f'scenario = "{scenario.id}"',
    ]
    if scenario.id in SCENARIO_MECHANISMS:
        lines.append(f"sasl_mechanisms = {json.dumps(list(SCENARIO_MECHANISMS[scenario.id]))}")
    if scenario.id == "chaos":
        stage, reply = PLAN_CHAOS[protocol]
        lines += ["[listeners.chaos]", f'stage = "{stage}"', f'reply = "{reply}"']
    return "\n".join(lines) + "\n\n"


def _plan_bases() -> list[str]:
    lines = []
    for protocol in PROTOCOLS:
        name = protocol.upper()
        like_implicit, like_starttls = STANDARD_PORTS[protocol]
        lines.append(f"#   {name} implicit (like {like_implicit})   {plan_port(protocol, PLAN_MODES[0], 0)} + i     "
                     f"{name} STARTTLS (like {like_starttls})   {plan_port(protocol, PLAN_MODES[1], 0)} + i")
    return lines


def _plan_table() -> list[str]:
    lines = []
    section = 1
    for index, scenario in enumerate(SCENARIOS.values()):
        if scenario.section != section:
            section = scenario.section
            lines += ["#", "#   (section 2)" if section == 2 else "#   (section 1, continued)"]
        if scenario.section == 2:
            lines.append(f"#{index:>5}  {scenario.id:<30}{', '.join(scenario.protocols)}")
        elif not plan_modes(scenario):
            lines.append(f"#{index:>5}  {scenario.id:<26}not buildable here (`mailmodes scenarios` says why)")
        else:
            sni = f"{scenario.sni_label}.<hostname>" if scenario.sni_label else "-"
            lines.append(f"#{index:>5}  {scenario.id:<26}{client_name(scenario.id, '<hostname>'):<34}{sni}")
    return lines


SECTION_2_RULE = "# ---- KNOWN-BAD.md section 2: STARTTLS and protocol scenarios, one port per protocol ----\n\n"
SECTION_1_MORE_RULE = ("\n# ---- KNOWN-BAD.md section 1, continued: certificate and TLS scenarios added later, "
                       "numbered after section 2 ----\n\n")
KNOWN_BAD_HEAD = """\
# Generated from the scenario catalogue (server/mailmodes/scenarios.py) by
# `{command}`; do not edit by hand.
#
# mailmodes known-bad layout: "badssl.com for mail". Every buildable certificate/TLS scenario of
# KNOWN-BAD.md section 1 on its own ports, for each protocol, implicit TLS and STARTTLS (required);
# every STARTTLS/protocol scenario of section 2 on one port per protocol it applies to: the
# STARTTLS-required port of the plan below (implicit-speaks-plaintext: the implicit one).
# Run: mailmodes serve --config config/known-bad.toml   (no root needed; all ports are between 11000 and 16999,
# below Linux's ephemeral range so that outgoing connections never take them)
# List: mailmodes scenarios --config config/known-bad.toml
#
# Port plan (stable): i is the scenario's position in mailmodes.scenarios.SCENARIOS, a fixed order
# to which new ids are only ever appended; ids not buildable with Debian's OpenSSL 3 and Python
# keep their i, unused.
{bases}
#
#    i  scenario                  connect as                        or choose by SNI
{table}
#
# Certificate scenarios name <hostname>, localhost and 127.0.0.1 (and their SNI name), so a
# client connecting as any of those meets only the intended flaw; the wildcard ones and cert-idn need the name
# above (e.g. "127.0.0.1 wildcard-apex.mail.example.test" in /etc/hosts). Clients trust
# certs/ca.pem, the project CA, and nothing else: never certs/scenarios/untrusted-ca.pem.
hostname = "mail.example.test"
host = "127.0.0.1"

[certs]
dir = "certs"

[http]
port = 8025

[[users]]
name = "alice"
password = "alice-password"
addresses = ["alice@example.test"]

[[users]]
name = "bob"
password = "bob-password"
addresses = ["bob@example.test"]

"""
