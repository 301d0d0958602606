"""MailmodesContainer (mailmodes.container) against a real container engine: podman's
Docker-compatible API, with the image ../shared/tools/docker-smoke builds (CI builds it just
before the tests). Skipped only where there is no container engine, and in CI never."""

from __future__ import annotations

import hashlib
import imaplib
import os
import re
import shutil
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import IN_CI

ROOT = Path(__file__).resolve().parents[2]
SMOKE_IMAGE = "localhost/docker-smoke:latest"
# one tag per checkout: worktrees sharing docker-smoke's storage never test each other's image
OWN_IMAGE = f"localhost/mailmodes-test:{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
# docker-smoke's private podman state, where its image is
SMOKE_STATE = Path(os.environ.get("DOCKER_SMOKE_STATE", "/var/tmp/docker-smoke"))
# .ci/run builds the image with it just before the tests, where it exists (not in fresh-ci's container)
IMAGE_BUILT_BY_CI = IN_CI and (ROOT.parent / "shared" / "tools" / "docker-smoke").is_file()


def unavailable(reason: str) -> None:
    if IMAGE_BUILT_BY_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DOCKER_HOST for podman's Docker-compatible API, run here for these tests."""
    podman = shutil.which("podman")
    if podman is None:
        unavailable("no container engine: podman is not installed")
    assert podman is not None
    path = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{path}"], env=podman_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_ping(path, service)
        yield f"unix://{path}"
    finally:
        service.terminate()
        service.wait(timeout=30)
        assert service.stderr is not None
        service.stderr.close()


def podman_environment() -> dict[str, str]:
    """docker-smoke's podman state where there is one: its base images and the image it built."""
    environment = dict(os.environ)
    for name, conf in (("CONTAINERS_STORAGE_CONF", "storage.conf"), ("CONTAINERS_CONF", "containers.conf")):
        if (SMOKE_STATE / conf).is_file():
            environment[name] = str(SMOKE_STATE / conf)
    return environment


def image_of_this_tree() -> str:
    """The image to test: MAILMODES_TEST_IMAGE; in CI the one .ci/run just built with docker-smoke;
    elsewhere one built here from this tree (an older image would lack what the tests use)."""
    if os.environ.get("MAILMODES_TEST_IMAGE"):
        return os.environ["MAILMODES_TEST_IMAGE"]
    if IMAGE_BUILT_BY_CI:
        return SMOKE_IMAGE
    built = subprocess.run(["podman", "build", "--pull=never", "-q", "-t", OWN_IMAGE, str(ROOT)],
                           env=podman_environment(), capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        unavailable(f"podman build failed (no python:3.11-slim here? ../shared/tools/docker-smoke makes one): "
                    f"{built.stderr.strip().splitlines()[-1:]}")
    return OWN_IMAGE


def _wait_for_ping(path: Path, service: subprocess.Popen[bytes]) -> None:
    """Until podman answers /_ping. It is not ours to await: it makes its socket when it is ready
    (socket activation, which would spare this, dropped the first connections here)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and service.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ping:
                ping.settimeout(10)
                ping.connect(str(path))
                ping.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                if ping.recv(64).startswith(b"HTTP/1.0 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    assert service.stderr is not None
    error = service.stderr.read().decode(errors="replace") if service.poll() is not None else "no answer in 30 s"
    unavailable(f"podman system service did not come up: {error[-500:]}")


@pytest.fixture(scope="module")
def engine(docker_host: str) -> Iterator[str]:
    """testcontainers set up for the podman service, and the image there: its name."""
    pytest.importorskip("testcontainers", reason="pip install 'mailmodes[testcontainers]'")
    from testcontainers.core.config import ConnectionMode
    from testcontainers.core.config import testcontainers_config as config

    import docker

    # No registry here, so no Ryuk reaper image: the fixture removes the container itself. Inside a
    # container ourselves, testcontainers would look for the host at the bridge gateway.
    saved = (config.ryuk_disabled, config.tc_host_override, config.connection_mode_override)
    config.ryuk_disabled, config.tc_host_override = True, "127.0.0.1"
    config.connection_mode_override = ConnectionMode.docker_host
    os.environ["DOCKER_HOST"] = docker_host
    try:
        image = image_of_this_tree()
        client = docker.DockerClient(base_url=docker_host)
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            unavailable(f"no image {image}: .ci/run builds it with ../shared/tools/docker-smoke")
        finally:
            client.close()
        yield image
    finally:
        del os.environ["DOCKER_HOST"]
        config.ryuk_disabled, config.tc_host_override, config.connection_mode_override = saved


@pytest.fixture(scope="module")
def container(engine: str) -> Iterator[object]:
    from mailmodes.container import MailmodesContainer

    with MailmodesContainer(engine) as mail:
        yield mail


def test_the_readme_example(engine: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "README.md").read_text()
    [example] = [block for block in re.findall(r"```python\n(.*?)\n```", text, flags=re.S)
                 if "MailmodesContainer(" in block]
    exec(compile(example.replace('"mailmodes:latest"', repr(engine)), "README.md", "exec"), {})
    assert capsys.readouterr().out == "hello\n\n"


def test_the_container_is_ready_with_ports_ca_and_api(container: object, tmp_path: Path) -> None:
    from mailmodes.container import MailmodesContainer

    assert isinstance(container, MailmodesContainer)
    api = container.api()
    assert api.get("/api/ready")["ready"] is True
    assert container.port("submission") == container.port(587) != 587
    assert container.ca_file(tmp_path).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    address = api.address("bob")
    with smtplib.SMTP(container.host(), container.port("submission"), timeout=20) as client:
        client.starttls(context=container.ssl_context())
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", [address], f"To: {address}\r\nSubject: from the host\r\n\r\nhi\r\n")
    message = api.wait_for_message(to=address, subject="from the host", timeout=20)
    assert message.text == "hi\n"
    with imaplib.IMAP4_SSL(container.host(), container.port("imaps"), ssl_context=container.ssl_context(),
                           timeout=20) as imap:
        imap.login("bob", "bob-password")
        assert imap.select("INBOX")[0] == "OK"


def test_an_unknown_listener_is_named(container: object) -> None:
    from mailmodes.container import MailmodesContainer

    assert isinstance(container, MailmodesContainer)
    with pytest.raises(KeyError, match="no listener 'smtps' in the container; listeners: smtp, submissions"):
        container.port("smtps")
