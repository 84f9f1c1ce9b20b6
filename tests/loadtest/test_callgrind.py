"""The ``--callgrind`` mode of the echo and HTTP hello benchmarks (``loadtest/_callgrind.py``):
its client (load.py's closed loop) checks every answer, and the instruction count per request
comes out of two real runs under callgrind."""

from __future__ import annotations

import shutil

import _callgrind
import pytest
from peers import _serve

from fibernet.examples.echo import handle as echo_handle
from fibernet.examples.hello import app as hello_app


def test_the_client_runs_every_echo_and_http_exchange(tcp_server, http_server):
    _, port = tcp_server(echo_handle)
    _callgrind.drive(_callgrind.echo_exchange(16384), port, 100)
    _, port = http_server(hello_app)
    _callgrind.drive(_callgrind.http_exchange("/hello"), port, 100)


def test_a_ratio_just_over_its_bar_is_shown_as_over_it():
    results = {"fibernet": {"per_request": 36_300}, "uvicorn": {"per_request": 108_300}}
    line = _callgrind.render("HTTP hello", results, {"uvicorn": 0.33}).splitlines()[-1]
    assert "0.335x <= 0.33x: FAIL" in line, line
    results["fibernet"]["per_request"] = 35_000
    assert "0.323x <= 0.33x: PASS" in _callgrind.render("HTTP hello", results, {"uvicorn": 0.33})


def test_a_wrong_answer_fails_the_run(tcp_server, http_server):
    def doubles(sock):
        while data := sock.recv(65536):
            sock.sendall(data + data)

    _, port = tcp_server(doubles)
    # (the extra bytes show as the next answer on the connection: more requests than connections)
    with pytest.raises(RuntimeError, match="echo of request [0-9]+ differs"):
        _callgrind.drive(_callgrind.echo_exchange(64), port, 4 * _callgrind.CONNECTIONS)
    _, port = http_server(hello_app)
    with pytest.raises(RuntimeError, match="HTTP status 404"):
        _callgrind.drive(_callgrind.http_exchange("/nowhere"), port, 10)


def test_totals_reads_callgrinds_summary(tmp_path):
    out = tmp_path / "callgrind.out"
    out.write_text("version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nfl=x\nfn=y\n1 5\ntotals: 123456\n")
    assert _callgrind.totals(str(out)) == 123456
    out.write_text("events: Ir\n")
    with pytest.raises(RuntimeError, match="no totals"):
        _callgrind.totals(str(out))


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind (.ci/run installs it)")
@pytest.mark.timeout(600)
def test_instructions_per_message_of_a_real_server_under_callgrind():
    """Two runs of the raw epoll echo server: the later one served more, so it counted more,
    and the difference per message is a plausible count (a few thousand instructions)."""
    target = _callgrind.Target("raw-epoll", lambda port: _serve.command("echo_epoll", port=port))
    row = _callgrind.per_request(target, _callgrind.echo_exchange(64), 20, 220, 10)
    assert row["ir_n2"] > row["ir_n1"] > 0
    assert 500 < row["per_request"] < 1_000_000, row
