"""The pub/sub example over real loopback sockets: a server on two scheduler threads, several
clients (plain blocking sockets in the test's thread, each with a 10 s bound)."""

from __future__ import annotations

import contextlib
import socket

import pytest

import fibernet
import fibernet.examples.pubsub as pubsub
from fibernet.actors import whereis

pytestmark = pytest.mark.timeout(30)


class Client:
    def __init__(self, address) -> None:
        self.sock = socket.create_connection(address[:2], timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unparsed {self.buf!r}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def ask(self, line: str) -> str:
        self.send(line)
        return self.line()


@pytest.fixture
def server():
    srv = fibernet.Server(pubsub.handle, threads=2).start()
    try:
        yield srv
    finally:
        srv.stop(0)
        assert srv.wait(10)


@pytest.fixture
def clients(server):
    with contextlib.ExitStack() as stack:

        def connect(n: int = 1):
            made = [Client(server.address) for _ in range(n)]
            for c in made:
                stack.callback(c.close)
            return made

        yield connect


def test_publish_reaches_every_subscriber_in_order(clients):
    subs = clients(4)
    publisher, bystander = clients(2)
    for c in subs:
        assert c.ask("SUB news") == "OK SUB news"
    assert bystander.ask("SUB sport") == "OK SUB sport"
    for i in range(50):
        assert publisher.ask(f"PUB news item {i} with spaces") == "OK PUB news 4"
    for c in subs:
        assert [c.line() for _ in range(50)] == [f"MSG news item {i} with spaces" for i in range(50)]
    # the bystander got nothing from "news": its next line is the answer to its next command
    assert bystander.ask("PUB sport score") == "MSG sport score"  # subscribed: its own MSG first
    assert bystander.line() == "OK PUB sport 1"


def test_unsubscribe(clients):
    a, b, publisher = clients(3)
    assert a.ask("SUB t") == "OK SUB t"
    assert b.ask("SUB t") == "OK SUB t"
    assert publisher.ask("PUB t one") == "OK PUB t 2"
    assert a.line() == "MSG t one" and b.line() == "MSG t one"
    assert a.ask("UNSUB t") == "OK UNSUB t"
    assert publisher.ask("PUB t two") == "OK PUB t 1"
    assert b.line() == "MSG t two"
    assert a.ask("UNSUB t") == "OK UNSUB t"  # the MSG "two" did not come before this answer
    assert publisher.ask("PUB nobody-listens x") == "OK PUB nobody-listens 0"


def test_bad_commands_get_ERR_and_the_session_goes_on(clients):
    (c,) = clients(1)
    for bad in ("HELLO", "SUB", "PUB onlytopic", "UNSUB", ""):
        assert c.ask(bad).startswith("ERR "), bad
    assert c.ask("sub lower-case-verb") == "OK SUB lower-case-verb"
    assert c.ask("PUB lower-case-verb hi") == "MSG lower-case-verb hi"
    assert c.line() == "OK PUB lower-case-verb 1"


def test_a_subscriber_that_disconnects_is_dropped(clients):
    stays, leaves, publisher = clients(3)
    assert stays.ask("SUB room") == "OK SUB room"
    assert leaves.ask("SUB room") == "OK SUB room"
    assert publisher.ask("PUB room before") == "OK PUB room 2"
    leaves.close()
    # The server notices the end of the connection on its own time: publish until it has
    # (each try is a round trip through the topic actor; bounded).
    for attempt in range(2000):
        reply = publisher.ask(f"PUB room after {attempt}")
        if reply == "OK PUB room 1":
            break
        assert reply == "OK PUB room 2"
    else:
        pytest.fail("the closed subscriber was never dropped")
    assert stays.line() == "MSG room before"
    received = [stays.line() for _ in range(attempt + 1)]
    assert received == [f"MSG room after {i}" for i in range(attempt + 1)]


def test_a_topic_that_fails_is_restarted_by_the_supervisor(clients, spin_until):
    a, publisher = clients(2)
    assert a.ask("SUB fragile") == "OK SUB fragile"
    old = whereis("topic:fragile")
    assert old is not None and old.alive
    old.cast(("no-such-command", None, None))  # from this plain thread: the topic raises
    assert isinstance(old.join(timeout=10), ValueError)
    spin_until(lambda: whereis("topic:fragile") not in (None, old), "the topic's restart")
    new = whereis("topic:fragile")
    assert new.alive
    # the new incarnation serves: subscribe again and publish
    assert a.ask("SUB fragile") == "OK SUB fragile"
    assert publisher.ask("PUB fragile again") == "OK PUB fragile 1"
    assert a.line() == "MSG fragile again"


def test_many_clients_on_many_topics(clients):
    subs = clients(12)
    publishers = clients(3)
    for k, c in enumerate(subs):
        assert c.ask(f"SUB topic{k % 3}") == f"OK SUB topic{k % 3}"
    for round_ in range(10):
        for p, pub in enumerate(publishers):
            assert pub.ask(f"PUB topic{p} r{round_}") == f"OK PUB topic{p} 4"
    for k, c in enumerate(subs):
        assert [c.line() for _ in range(10)] == [f"MSG topic{k % 3} r{r}" for r in range(10)]


def test_a_subscriber_that_does_not_read_is_dropped_and_never_blocks_the_topic(server, monkeypatch):
    monkeypatch.setattr(pubsub, "OUTBOX", 8)  # read when a connection starts: small outboxes
    with contextlib.ExitStack() as stack:
        slow = socket.socket()
        stack.callback(slow.close)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        slow.connect(server.address[:2])
        slow.sendall(b"SUB firehose\n")  # and never reads again
        publisher = Client(server.address)
        stack.callback(publisher.close)
        body = "x" * 3000
        # The first PUB may overtake the slow client's SUB (two connections): wait for it.
        for _ in range(2000):
            if publisher.ask(f"PUB firehose {body}") == "OK PUB firehose 1":
                break
        else:
            pytest.fail("the slow client never subscribed")
        # Every PUB is answered (the topic never waits for the slow reader) until its outbox
        # and socket buffers are full; then it is dropped.
        reached = 0
        while reached < 20000:
            reply = publisher.ask(f"PUB firehose {body}")
            if reply == "OK PUB firehose 0":
                break
            assert reply == "OK PUB firehose 1"
            reached += 1
        else:
            pytest.fail("the slow subscriber was never dropped")
        assert reached > 8  # it took at least a full outbox
        assert publisher.ask("PUB firehose after") == "OK PUB firehose 0"
