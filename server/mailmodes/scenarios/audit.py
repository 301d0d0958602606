"""Audit mode: one listener that serves the next scenario on each new connection from the same
client address, so a client configured once (a GUI client, or a CLI client in a loop) walks the
whole catalogue from one port. Data and bookkeeping only; app.py does the dispatching.

The walk begins with the known-good setup of the port's mode (does the client work at all?),
then every buildable scenario for the protocol that the port's mode can serve: the certificate
and TLS scenarios on any TLS port, the STARTTLS and protocol ones on a STARTTLS port
(implicit-speaks-plaintext on an implicit-TLS one), as the known-bad plan places them (not the wildcard ones, which need a host name of their own, nor the SASL ones, which need mechanisms the audit port does not offer). Once a
client has walked it all, its further connections get the known-good setup again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from mailmodes.scenarios.catalogue import PLAN_CHAOS, SCENARIOS, client_name, plan_modes
from mailmodes.tls.policy import TlsMode

# A port a client meets as STARTTLS or as implicit TLS; a plaintext port has no TLS to test.
AUDIT_MODES = (TlsMode.IMPLICIT, TlsMode.STARTTLS_REQUIRED, TlsMode.STARTTLS_OPTIONAL)


def needs_own_name(scenario_id: str) -> bool:
    """The wildcard scenarios are met only by a client that connects by their own name; one set
    up once, by the host name, would meet a certificate that is fine for it (*.example.test
    matches mail.example.test), so they are not in the walk."""
    return client_name(scenario_id, "hostname.test") != "hostname.test"


def audit_plan(protocol: str, mode: TlsMode) -> tuple[str | None, ...]:
    """None (the known-good setup), then the scenario ids, in catalogue order."""
    planned = TlsMode.IMPLICIT if mode is TlsMode.IMPLICIT else TlsMode.STARTTLS_REQUIRED
    return (None, *(s.id for s in SCENARIOS.values()
                    if s.buildable and protocol in s.protocols and planned in plan_modes(s)
                    and not needs_own_name(s.id) and s.kind != "auth"))


def audit_chaos(protocol: str) -> dict[str, str]:
    """The chaos settings the audit's `chaos` step uses: the known-bad plan's for the protocol."""
    stage, reply = PLAN_CHAOS[protocol]
    return {"stage": stage, "reply": reply}


@dataclass
class AuditWalk:
    """Where each client address is in the plan. Read from other threads (the CLI's progress)."""

    plan: tuple[str | None, ...]
    _next: dict[str, int] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, host: str) -> int:
        """The plan index for a new connection from `host` (past the end: 0, the known-good one)."""
        with self._lock:
            index = self._next.get(host, 0)
            self._next[host] = index + 1
            self._started.setdefault(host, time.time())
        return index if index < len(self.plan) else 0

    def left(self, host: str) -> int:
        """Connections `host` still has to make to have met every step."""
        with self._lock:
            return max(0, len(self.plan) - self._next.get(host, 0))

    def started(self, host: str) -> float | None:
        with self._lock:
            return self._started.get(host)

    def clients(self) -> list[str]:
        with self._lock:
            return list(self._next)
