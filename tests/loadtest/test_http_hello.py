"""loadtest/http_hello.py: one measurement of fibernet's hello server under wrk, over plain HTTP
and over TLS (``--tls``, which ``https_hello.py`` runs), and the bars of each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import _bench
import http_hello
import pytest

from .conftest import LOADTEST, ROOT

pytestmark = pytest.mark.timeout(60)


@pytest.mark.skipif(not shutil.which("wrk") or not shutil.which("openssl") or not shutil.which("taskset"),
                    reason="needs wrk, openssl and taskset (.ci/run installs them)")
@pytest.mark.parametrize("tls", [False, True])
def test_a_measurement_of_fibernet_over_http_and_over_tls(tmp_path, tls):
    cpus = sorted(os.sched_getaffinity(0))
    params = {"duration": 1.0, "warmup": 1.0, "connections": 4, "wrk_threads": 1, "server_cpu": cpus[0],
              "wrk_cpu": cpus[-1], "wrk": shutil.which("wrk"), "start_timeout": 30, "conns": None,
              "close": tls}
    if tls:
        params["cert"], params["key"] = http_hello.make_certificate(str(tmp_path))
    assert http_hello.wrk_command(params, 8000, 1)[-1] == f"{'https' if tls else 'http'}://127.0.0.1:8000/hello"
    result = http_hello.dispatch("hello", "fibernet", params)
    assert result["requests"] > 0 and result["error_total"] == 0, result["wrk_output"]
    assert result["cpu_us_per_req"] > 0 and result["rss"] > 0
    assert ("--ssl-certfile" in result["server_command"]) == tls


def test_tls_takes_the_servers_with_a_certificate_and_keeps_only_the_no_errors_bar(capsys):
    assert http_hello.parse_args(["--tls"]).impls == ["fibernet", "uvicorn"]
    with pytest.raises(SystemExit):
        http_hello.parse_args(["--tls", "--impls", "fibernet,gevent"])
    assert "--impls: unknown gevent" in capsys.readouterr().err
    samples = _bench.Samples()
    for impl, us in (("fibernet", 10.0), ("uvicorn", 20.0)):
        samples.results[("hello", impl)] = [{"cpu_us_per_req": us, "errors": {}, "stop_seconds": 0.1,
                                             "killed": False}]
    rows = http_hello.summarise(samples, ["fibernet", "uvicorn"])
    plain, tls = http_hello.check_bars(rows, samples), http_hello.check_bars(rows, samples, tls=True)
    assert [c["pass"] for c in plain] == [False, True]  # 0.5x uvicorn is over the 0.4x bar
    assert [c["bar"] for c in tls] == [plain[-1]["bar"]] and tls[0]["pass"] is True


def test_https_hello_is_http_hello_over_tls():
    done = subprocess.run([sys.executable, os.path.join(LOADTEST, "https_hello.py"), "--help"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith("usage: https_hello.py"), done.stderr
    assert "--close" in done.stdout and "--tls" in done.stdout
