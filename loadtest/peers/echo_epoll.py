"""TCP echo on select.epoll: level-triggered, non-blocking sockets, recv then send in the event
loop itself: the floor for Python."""

from __future__ import annotations

import select

import _serve


def serve(host: str, port: int) -> None:
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    lsock = _serve.listen(host, port)
    lsock.setblocking(False)
    lfd = lsock.fileno()
    ep = select.epoll()
    ep.register(lfd, EPOLLIN)
    conns = {}
    unsent: dict[int, bytes] = {}  # a partial send: stop reading until it is flushed
    _serve.ready(lsock.getsockname()[1])

    def add(conn) -> None:
        conns[conn.fileno()] = conn
        ep.register(conn.fileno(), EPOLLIN)

    def drop(fd: int) -> None:
        ep.unregister(fd)
        conns.pop(fd).close()
        unsent.pop(fd, None)

    while True:
        for fd, ev in ep.poll():
            if fd == lfd:
                _serve.accept_all(lsock, add)
                continue
            conn = conns[fd]
            if fd in unsent:  # writable again (or an error: send raises)
                data = unsent.pop(fd)
            else:
                try:
                    data = conn.recv(_serve.RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    drop(fd)
                    continue
            try:
                n = conn.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                drop(fd)
                continue
            if n < len(data):
                unsent[fd] = data[n:]
                ep.modify(fd, EPOLLOUT)
            elif ev & EPOLLOUT:
                ep.modify(fd, EPOLLIN)


if __name__ == "__main__":
    _serve.main(serve, __doc__)
