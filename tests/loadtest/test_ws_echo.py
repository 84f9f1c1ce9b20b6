"""loadtest/ws_echo.py: its client frames what a WebSocket server reads, and its closed loop
really echoes through fibernet's WebSocket server (the one the benchmark starts)."""

from __future__ import annotations

import os

import pytest
import ws_echo
from wsproto.frame_protocol import FrameProtocol, Opcode

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("size", [1, 125, 126, 4000, 65535])
def test_frames_decode_as_one_text_message(size):
    payload = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"a")
    server = FrameProtocol(client=False, extensions=[])  # (reads masked frames, as a server does)
    server.receive_bytes(ws_echo.frame(payload, ws_echo.MASK))
    frames = list(server.received_frames())
    got = [(f.opcode, f.payload, f.message_finished) for f in frames]
    assert got == [(Opcode.TEXT, payload.decode(), True)]
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(ws_echo.frame(payload, None))
    assert [f.payload for f in client.received_frames()] == [payload.decode()]


def test_the_closed_loop_against_the_fibernet_server():
    params = {"size": 300, "conns": 5, "host": "127.0.0.1", "warmup": 0.1, "duration": 0.3,
              "server_cpu": None}
    result = ws_echo.measure("echo", "fibernet", params)
    assert result["msgs"] > 0 and result["us_per_msg"] > 0
