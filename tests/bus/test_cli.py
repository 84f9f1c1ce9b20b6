"""``--bus`` / ``FIBERNET_BUS``: a malformed URL is a usage error, named, before anything binds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_malformed_bus_url_is_a_usage_error(how, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBERNET_")}
    args = [sys.executable, "-m", "fibernet_cli.main", "serve", "--port", "0"]
    if how == "flag":
        args += ["--bus", "http://127.0.0.1:6379"]
    else:
        env["FIBERNET_BUS"] = "http://127.0.0.1:6379"
    result = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Invalid value for --bus" in result.stderr and "expected redis://" in result.stderr
