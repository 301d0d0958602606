"""Every server-side TLS context of one MailServer, decided in one place.

The known-good context, a listener's own certificate, and the certificate/TLS scenarios (made
once and shared, from the catalogue entries of scenarios.py); and the SNI callback that lets a
client pick a certificate scenario by name (`expired.<hostname>`) on any listener, STARTTLS ports
included. The callback also notes the SNI name and the scenario on the connection's SSL object,
where the journal reads them.
"""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path
from typing import Any

from mailmodes.config import Listener
from mailmodes.scenarios.catalogue import (
    SCENARIOS,
    SETTINGS,
    Scenario,
    TlsSettings,
    scenario_for_sni,
)
from mailmodes.tls.certs import ensure_certificates
from mailmodes.tls.handshake import server_context, staple_ocsp
from mailmodes.tls.policy import DEFAULT_TLS_PROFILE


class ServerContexts:
    def __init__(self, certs_dir: Path, hostname: str) -> None:
        self.certs_dir = certs_dir
        self.hostname = hostname
        paths = ensure_certificates(certs_dir, hostname)
        self.ca_file = paths.ca_file
        self.default = self._with_sni(server_context(paths.cert_file, paths.key_file))
        self._profiles: dict[str, ssl.SSLContext] = {DEFAULT_TLS_PROFILE: self.default}
        self._scenarios: dict[str, ssl.SSLContext] = {}

    def for_listener(self, listener: Listener) -> ssl.SSLContext:
        scenario = SCENARIOS.get(listener.scenario or "")
        if scenario is not None and scenario.kind in ("certificate", "tls"):
            return self.scenario(scenario.id)
        # A scenario's context keeps its own versions and ciphers: tls_profile is for known-good ones.
        if listener.client_certificate:
            return self.asking_for_client_certificates(listener)
        if listener.cert_file and listener.key_file:
            return self._with_sni(server_context(listener.cert_file, listener.key_file, profile=listener.tls_profile))
        return self.profile(listener.tls_profile)

    def asking_for_client_certificates(self, listener: Listener) -> ssl.SSLContext:
        """A context of its own (verify_mode is the context's): client_certificate "require"
        (CERT_REQUIRED: no certificate, no handshake) or "request" (CERT_OPTIONAL); either way a
        certificate shown must come from the project CA, or the handshake fails (alert unknown_ca)."""
        paths = ensure_certificates(self.certs_dir, self.hostname)
        cert_file, key_file = ((listener.cert_file, listener.key_file) if listener.cert_file and listener.key_file
                               else (paths.cert_file, paths.key_file))
        context = self._with_sni(server_context(cert_file, key_file, profile=listener.tls_profile))
        context.verify_mode = ssl.CERT_REQUIRED if listener.client_certificate == "require" else ssl.CERT_OPTIONAL
        context.load_verify_locations(paths.ca_file)
        return context

    def profile(self, name: str) -> ssl.SSLContext:
        """The generated certificate under one of the TLS profiles (made once, then shared)."""
        context = self._profiles.get(name)
        if context is None:
            paths = ensure_certificates(self.certs_dir, self.hostname)
            context = self._profiles[name] = self._with_sni(server_context(paths.cert_file, paths.key_file, profile=name))
        return context

    def scenario(self, scenario_id: str) -> ssl.SSLContext:
        context = self._scenarios.get(scenario_id)
        if context is None:
            context = self._scenarios[scenario_id] = self._with_sni(
                tls_context_for(scenario_id, self.certs_dir, self.hostname)
            )
        return context

    def _with_sni(self, context: ssl.SSLContext) -> ssl.SSLContext:
        context.sni_callback = self._sni
        return context

    def _sni(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        ssl_object.mailmodes_sni = server_name
        scenario_id = scenario_for_sni(server_name, self.hostname)
        if scenario_id is not None:
            # Only the certificate changes this way (OpenSSL keeps the listener's versions and
            # ciphers), which is why only certificate scenarios have an SNI name.
            ssl_object.context = self.scenario(scenario_id)
            ssl_object.mailmodes_scenario = scenario_id
            ssl_object.mailmodes_bad_certificate = SCENARIOS[scenario_id].bad_certificate


def tls_context_for(scenario_id: str, certs_dir: Path, hostname: str) -> ssl.SSLContext:
    """The server-side context presenting one scenario (certificates cached in certs_dir/scenarios/)."""
    from mailmodes.scenarios import (
        badcerts,  # cryptography: only when a scenario is actually served
    )

    scenario = _buildable(scenario_id)
    settings = SETTINGS.get(scenario_id, TlsSettings())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python deprecates TLSVersion.TLSv1/TLSv1_1; offering them is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = settings.minimum
        context.maximum_version = settings.maximum
    if settings.ciphers is not None:
        # Before loading keys: the security level also decides which keys and signatures load.
        context.set_ciphers(settings.ciphers)
    if settings.dh1024:
        context.load_dh_params(str(badcerts.dh1024_params(certs_dir)))
    if settings.client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ensure_certificates(certs_dir, hostname).ca_file)
        badcerts.client_certificate(certs_dir, hostname)  # certs/clients/client.pem, one to show
    if scenario.kind == "certificate":
        try:
            bundle = badcerts.scenario_certificate(scenario_id, certs_dir, hostname)
        except badcerts.CertificateBuildError as error:
            raise ValueError(f"scenario {scenario_id!r} cannot be built: {error}") from None
        context.load_cert_chain(bundle)
        if scenario_id == "cert-revoked" and not staple_ocsp(
                context, badcerts.revoked_ocsp_response(bundle, certs_dir, hostname)):
            raise ValueError("scenario 'cert-revoked' cannot be built: this Python cannot staple OCSP responses")
    else:
        paths = ensure_certificates(certs_dir, hostname)
        context.load_cert_chain(paths.cert_file, paths.key_file)
    return context


def _buildable(scenario_id: str) -> Scenario:
    scenario = SCENARIOS.get(scenario_id)
    if scenario is None:
        known = ", ".join(s.id for s in SCENARIOS.values() if s.buildable)
        raise ValueError(f"unknown certificate/TLS scenario {scenario_id!r}; known: {known}")
    if not scenario.buildable:
        raise ValueError(f"scenario {scenario_id!r} cannot be built here: {scenario.why_not}")
    return scenario
