"""loadtest/compare.py end to end, fibernet only and tiny: servers started pinned, measured
by load.py, summarised; the peers' interpreter is named in the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import LOADTEST, ROOT

pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")

pytestmark = pytest.mark.timeout(60)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs (server and load apart)")
def test_compare_runs_fibernet_side_by_side(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(LOADTEST, "compare.py"),
            "--quick",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--workloads",
            "echo,http",
            "--impls",
            "fibernet",
            "--server-cpu",
            str(cpus[0]),
            "--load-cpu",
            str(cpus[1]),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "peers from THIS environment" in proc.stdout
    assert "== echo ==" in proc.stdout and "== http ==" in proc.stdout
    doc = json.loads(out.read_text())
    for key in ("echo/fibernet", "http/fibernet"):
        sample = doc["samples"][key]
        assert sample["errors"] == []
        (result,) = sample["results"]
        assert result["errors"] == 0
        assert result["requests"] > 0 and result["rate"] > 0
        assert result["server_us_per_msg"] > 0
        assert result["cpus"] == [cpus[1]]  # the driver (and its load) ran on the load CPU
        assert result["server_command"].startswith(f"taskset -c {cpus[0]} ")


def test_make_env_installs_into_its_own_venv_only(tmp_path, monkeypatch):
    """--make-env DIR makes a venv in DIR and pip-installs the peers with DIR's python, never
    with this interpreter; when everything imports there already it installs nothing."""
    import _peers as cs

    calls: list[list[str]] = []
    directory = str(tmp_path / "peers")
    python = os.path.join(directory, "bin", "python")

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        if cmd[1:3] == ["-m", "venv"]:
            os.makedirs(os.path.dirname(python))
            open(python, "w").close()
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cs.subprocess, "run", fake_run)
    monkeypatch.setattr(cs, "importable", lambda py, modules: False)
    assert cs.make_env(directory) == python
    assert calls[0] == [sys.executable, "-m", "venv", directory]
    assert calls[1][:4] == [python, "-m", "pip", "install"]
    assert set(cs.PEER_PACKAGES) | set(cs.FIBERNET_DEPS) <= set(calls[1])
    assert len(calls) == 2  # and nothing else: no pip run by this interpreter

    calls.clear()
    checked = []
    monkeypatch.setattr(cs, "importable", lambda py, modules: checked.extend(modules) or py == python)
    assert cs.make_env(directory) == python
    assert calls == []  # made already, everything imports: nothing to do
    assert "hdrh" in checked and "hdrhistogram" not in checked  # (a package by its module's name)


def test_every_peer_server_runs_on_the_peers_python():
    """fibernet runs on this interpreter, every peer (TCP and HTTP) on the peers' one."""
    import compare

    for kind, impl in (("tcp", "gevent"), ("tcp", "uvloop-proto"), ("http", "gevent"), ("http", "aiohttp"),
                       ("http", "uvicorn")):
        assert compare.server_command(kind, impl, 8000, "/peers/bin/python")[0] == "/peers/bin/python", impl
    for kind in ("tcp", "http"):
        assert compare.server_command(kind, "fibernet", 8000, "/peers/bin/python")[0] == sys.executable
