"""What the line-based examples (chat, pubsub) share: a member's writer fiber."""

from __future__ import annotations

import fibernet as fn


def write_lines(conn, outbox: fn.Channel) -> None:
    """Send every line put in ``outbox`` to ``conn`` until the outbox is closed or the
    client is gone; then shut the connection down (the client reads its last line, then
    the end of the stream)."""
    try:
        for line in outbox:
            conn.sendall(line)
    except OSError:
        pass
    finally:
        conn.shutdown()
