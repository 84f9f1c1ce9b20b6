"""The peers' environment: the interpreter the peer servers run on (``--peers-python PATH``),
or a venv made for them (``--make-env DIR``), never fibernet's own.  ``fibernet loadtest
--make-env DIR SCRIPT`` runs any benchmark there; ``compare.py`` starts its peers there."""

from __future__ import annotations

import os
import subprocess
import sys

PEER_PACKAGES = ["gevent", "trio", "uvloop", "uvicorn", "aiohttp", "httptools", "websockets", "wsproto"]
# fibernet's own dependencies and the load generator's, so that the other benchmark scripts can
# run on the peers' interpreter too (they import fibernet from this checkout; --callgrind's
# client is load.py); and the module names of those that import under another name
FIBERNET_DEPS = ["greenlet", "httptools", "click", "prometheus_client", "wsproto", "psutil", "hdrhistogram"]
MODULES = {"hdrhistogram": "hdrh"}


def make_env(directory: str) -> str:
    """``python -m venv DIR`` and pip install the peers (and fibernet's own dependencies, for
    the other benchmark scripts) into it, unless they all import there already; returns its
    python.  Nothing is installed into this interpreter's environment."""
    python = os.path.join(directory, "bin", "python")
    if not os.path.exists(python):
        print(f"making the peers' environment {directory}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", directory], check=True)
    packages = PEER_PACKAGES + [p for p in FIBERNET_DEPS if p not in PEER_PACKAGES]
    if importable(python, [MODULES.get(p, p) for p in packages]):
        return python
    print(f"installing into {directory}: {' '.join(packages)}", file=sys.stderr)
    subprocess.run([python, "-m", "pip", "install", "-q", *packages], check=True)
    return python


def importable(python: str, modules: list[str]) -> bool:
    code = "; ".join(f"import {m}" for m in modules) or "pass"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def peers_python(directory: str | None, python: str | None) -> tuple[str, str]:
    """(the peers' python, a sentence saying where the peers come from): the environment
    ``make_env(directory)`` makes, else ``python``, else this interpreter."""
    if directory:
        py = make_env(directory)
        return py, f"peers from the environment {directory} (made or updated by --make-env)"
    if python:
        return python, f"peers from {python}"
    return sys.executable, (
        f"peers from THIS environment ({sys.executable}), as no --peers-python or --make-env was "
        "given; use --make-env DIR to keep them out of fibernet's environment"
    )
