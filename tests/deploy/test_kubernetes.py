"""deploy/kubernetes: every manifest validates against the Kubernetes OpenAPI schemas (strict:
no unknown field) bundled by the kubernetes-validate package (offline), for the newest version
it has and for an older one still in use; and the manifests agree with each other, with the
Dockerfile and with `fibernet serve`."""

from __future__ import annotations

import re

import pytest

from .conftest import DEPLOY, need_module
from .deployfiles import dockerfile_commands, final_stage, parse_serve

kv = need_module("kubernetes_validate", "kubernetes-validate")
yaml = need_module("yaml", "PyYAML")

pytestmark = pytest.mark.timeout(60)

MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# The oldest version checked: the manifests use nothing newer (policy/v1 PDBs are 1.21,
# autoscaling/v2 HPAs 1.23).
OLDEST = "1.25"


def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: one resource per file"
    return docs[0]


def test_the_expected_manifests_are_there():
    assert {p.name for p in MANIFESTS} >= {"deployment.yaml", "service.yaml"}


@pytest.mark.parametrize("version", ["latest", OLDEST])
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_schema(path, version):
    version = kv.utils.latest_version() if version == "latest" else version
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                pytest.fail(f"{path.name} against Kubernetes {version}: {where}: {exc.message}")


@pytest.fixture(scope="module")
def deployment():
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def container(deployment):
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def seconds(value) -> float:
    return float(value)


def test_deployment_runs_a_valid_fibernet_serve(container):
    params = parse_serve(container["args"], env_of(container))
    assert params["host"] == "0.0.0.0"
    (port,) = container["ports"]
    assert port["containerPort"] == params["port"]


def test_deployment_agrees_with_the_dockerfile(deployment, container):
    final = final_stage(dockerfile_commands(DEPLOY / "Dockerfile"))
    expose = next(c.value[0] for c in final if c.cmd == "EXPOSE")
    user = next(c.value[0] for c in final if c.cmd == "USER")
    assert str(container["ports"][0]["containerPort"]) == expose.split("/")[0]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert str(security["runAsUser"]) == user.split(":")[0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_shutdown_fits_in_the_grace_period(deployment, container):
    """preStop sleep, then SIGTERM and fibernet's drain: both within terminationGracePeriodSeconds."""
    pod = deployment["spec"]["template"]["spec"]
    (sleep_cmd, pause) = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep_cmd == "sleep"
    drain = seconds(env_of(container)["FIBERNET_GRACEFUL_TIMEOUT"])
    assert seconds(pause) + drain < pod["terminationGracePeriodSeconds"]


def test_probes_and_resources(deployment, container):
    assert deployment["spec"]["replicas"] == 2
    names = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        spec = container[probe]
        action = spec.get("httpGet") or spec.get("tcpSocket")
        assert action is not None and action["port"] in names, f"{probe} must probe the served port"
        if "httpGet" in spec:
            assert spec["httpGet"]["path"] == "/hello"  # what the hello app answers 200 to
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]


def test_service_pdb_and_hpa_point_at_the_deployment(deployment, container):
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = load("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names | {p["containerPort"] for p in container["ports"]}
    if (DEPLOY / "kubernetes" / "pdb.yaml").exists():
        pdb = load("pdb.yaml")
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    if (DEPLOY / "kubernetes" / "hpa.yaml").exists():
        hpa = load("hpa.yaml")
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert hpa["spec"]["minReplicas"] >= deployment["spec"]["replicas"]
        # A CPU utilisation target needs a CPU request.
        assert re.fullmatch(r"\d+m?", container["resources"]["requests"]["cpu"])
