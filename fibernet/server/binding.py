"""Where a server listens: a host and port, a Unix socket path, an inherited descriptor
(``--fd``), or the sockets systemd passes with socket activation (``LISTEN_FDS``)."""

from __future__ import annotations

import os
import socket
import stat

SD_LISTEN_FDS_START = 3


def systemd_sockets(unset_environment: bool = True) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (sd_listen_fds(3)), if any."""
    try:
        pid = int(os.environ.get("LISTEN_PID", "0"))
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    return [inherited_socket(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]


def inherited_socket(fd: int) -> socket.socket:
    """A listening stream socket from descriptor ``fd`` (checked: a socket, listening)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ValueError(f"descriptor {fd} is not open: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"descriptor {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ValueError(f"descriptor {fd} is not a listening stream socket")
    sock.set_inheritable(False)
    return sock


def unix_listener(path: str, backlog: int = 1024) -> socket.socket:
    """A Unix stream socket listening at ``path`` (a stale socket file there is replaced)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock
