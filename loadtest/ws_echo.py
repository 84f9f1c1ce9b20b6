"""WebSocket echo benchmark: fibernet beside the websockets server and uvicorn's (websockets and
wsproto), loadtest/peers/ws_*.py: --conns WebSockets in a closed loop of --size byte text
frames, msgs/s and server CPU per message, medians over interleaved rounds
(docs/pages/benchmarks.md, "WebSocket echo").  It runs ``echo.py --ws``, whose options it takes.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its own modules

import echo  # noqa: E402

if __name__ == "__main__":
    sys.exit(echo.main(["--ws", *sys.argv[1:]]))
