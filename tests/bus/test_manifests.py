"""deploy/kubernetes: the chat Deployment's bus is the Redis Service of redis.yaml (the schema
itself is checked for every manifest by tests/deploy/test_kubernetes.py)."""

from __future__ import annotations

import pathlib

import pytest

import fibernet.bus as fb

yaml = pytest.importorskip("yaml")

KUBE = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def docs(name: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all((KUBE / name).read_text()) if d}


def test_the_chat_deployment_uses_the_redis_service_and_is_ready_only_with_its_bus():
    redis, chat = docs("redis.yaml"), docs("chat.yaml")
    container = chat["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    address = fb.parse_url(env["FIBERNET_BUS"])
    service = redis["Service"]
    assert address.host == service["metadata"]["name"]
    assert address.port in [p["port"] for p in service["spec"]["ports"]]
    assert service["spec"]["selector"] == redis["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    admin = int(env["FIBERNET_ADMIN_PORT"])
    assert admin in [p["containerPort"] for p in container["ports"] if p["name"] == "admin"]
