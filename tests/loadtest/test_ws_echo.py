"""loadtest/ws_echo.py (``echo.py --ws``): its client frames what a WebSocket server reads, and
its closed loop really echoes through fibernet's WebSocket server (the one the benchmark starts)."""

from __future__ import annotations

import os

import echo
import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("size", [1, 125, 126, 4000, 65535])
def test_frames_decode_as_one_text_message(size):
    payload = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"a")
    server = FrameProtocol(client=False, extensions=[])  # (reads masked frames, as a server does)
    server.receive_bytes(echo.frame(payload, echo.MASK))
    frames = list(server.received_frames())
    got = [(f.opcode, f.payload, f.message_finished) for f in frames]
    assert got == [(Opcode.TEXT, payload.decode(), True)]
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(echo.frame(payload, None))
    assert [f.payload for f in client.received_frames()] == [payload.decode()]


def test_the_closed_loop_against_the_fibernet_server():
    params = {"kind": "echo", "ws": True, "size": 300, "conns": 5, "host": "127.0.0.1", "warmup": 0.1,
              "duration": 0.3, "server_cpu": None}
    result = echo.dispatch("ws-echo-300B", "fibernet", params)
    assert result["msgs"] > 0 and result["us_per_msg"] > 0
    assert result["bytes_checked"] == result["msgs_total"] * len(echo.frame(b"x" * 300, None))


def test_ws_echo_runs_the_echo_benchmark_over_websockets(capsys):
    args = echo.parse_args(["--ws", "--quick"])
    assert (args.impls, args.sizes, args.conns, args.workloads) == (list(echo.WS), [64], 50, ["echo"])
    assert [w for w, _, params in echo.build_plan(args) if params["ws"]] == ["ws-echo-64B"] * len(echo.WS)
    for wrong in (["--size", "70000"], ["--workloads", "echo,idle"], ["--impls", "fibernet,gevent"]):
        with pytest.raises(SystemExit):
            echo.parse_args(["--ws", *wrong])
    assert "--impls: unknown gevent" in capsys.readouterr().err
