"""MailmodesContainer: the mailmodes image as a testcontainers-python module
(`pip install 'mailmodes[testcontainers]'`).

    with MailmodesContainer("mailmodes:latest") as mail:
        smtp = smtplib.SMTP(mail.host(), mail.port("submission"))
        smtp.starttls(context=mail.ssl_context())
        ...
        message = mail.api().wait_for_message("bob", subject="hello")

start() returns once GET /api/ready says every listener listens; port() maps a listener's name
(or container port) to the port published on the host; the CA comes from the container's API.
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from docker.errors import APIError
from testcontainers.core.container import DockerContainer

from mailmodes.web.remote import MailmodesApi

# The image's default config (config/default.toml): listener name -> port inside the container.
DEFAULT_LISTENERS = {"smtp": 25, "submissions": 465, "submission": 587, "imap": 143, "imaps": 993, "pop3": 110,
                     "pop3s": 995}
HTTP_PORT = 8025
READY_POLL_SECONDS = 0.2  # a container's start cannot be awaited through its API: asked this often
START_ATTEMPTS = 3


class ContainerNotReady(RuntimeError):
    """/api/ready did not say ready in time; str() has the container's last log lines."""


class MailmodesContainer(DockerContainer):
    def __init__(self, image: str = "mailmodes:latest", *, ports: Iterable[int] = DEFAULT_LISTENERS.values(),
                 environment: Mapping[str, str] | None = None, ready_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self.with_exposed_ports(HTTP_PORT, *ports)
        for name, value in (environment or {}).items():
            self.with_env(name, value)
        self.ready_timeout = ready_timeout
        self._listeners: dict[str, int] | None = None

    def start(self) -> MailmodesContainer:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                super().start()
                break
            except APIError as error:
                # The engine picks a free host port, then binds it: in a busy CI machine another
                # process can take it in between. A new container gets new ports.
                if "address already in use" not in str(error) or attempt == START_ATTEMPTS:
                    raise
                self._remove_unstarted(str(error))
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _remove_unstarted(self, error: str) -> None:
        found = re.search(r"/containers/([0-9a-f]{12,64})/start", error)
        if found is not None:
            self.get_docker_client().client.containers.get(found.group(1)).remove(force=True)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.api_url() + "/api/ready", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError, ConnectionError) as error:
                last = str(getattr(error, "reason", error))
            time.sleep(READY_POLL_SECONDS)
        logs = b"\n".join(part for part in self.get_logs() if part).decode(errors="replace")
        raise ContainerNotReady(f"{self.image}: /api/ready not ready after {self.ready_timeout:g} s ({last}); "
                                f"log:\n{logs[-2000:]}")

    # --- where things are ---------------------------------------------------------------------

    def host(self) -> str:
        return str(self.get_container_host_ip())

    def api_url(self) -> str:
        return f"http://{self.host()}:{self.get_exposed_port(HTTP_PORT)}"

    def api(self) -> MailmodesApi:
        """The HTTP API's helpers: wait_for_message, seed, set_scenario, reset ..."""
        return MailmodesApi(self.api_url())

    def port(self, listener: str | int) -> int:
        """The host port for a listener (its name in the container's config, or its port there)."""
        if isinstance(listener, int):
            return int(self.get_exposed_port(listener))
        if self._listeners is None:
            self._listeners = {entry["name"]: entry["port"] for entry in self.api().listeners()
                               if entry["port"] is not None}
        if listener not in self._listeners:
            raise KeyError(f"no listener {listener!r} in the container; listeners: {', '.join(self._listeners)}")
        return int(self.get_exposed_port(self._listeners[listener]))

    def ca_pem(self) -> bytes:
        """The container's test CA certificate (GET /ca.pem)."""
        with urllib.request.urlopen(self.api_url() + "/ca.pem", timeout=10) as response:
            data: bytes = response.read()
            return data

    def ca_file(self, directory: Path) -> Path:
        path = Path(directory) / "mailmodes-ca.pem"
        path.write_bytes(self.ca_pem())
        return path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the container's CA. The certificate names localhost and
        127.0.0.1 (and MAILMODES_HOSTNAME): connect by one of those."""
        return ssl.create_default_context(cadata=self.ca_pem().decode())
