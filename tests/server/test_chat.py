"""The chat example over real loopback connections: every line reaches every member, in the
one order the room chose, the sender included."""

from __future__ import annotations

import socket
import threading

import pytest

from fibernet.examples import chat

from ._support import LineReader, client

pytestmark = pytest.mark.timeout(30)


class Member:
    def __init__(self, address) -> None:
        self.sock = client(address)
        self.lines = LineReader(self.sock)
        greeting = self.lines.readline()
        assert greeting.startswith("* you are "), greeting
        self.name = greeting[len("* you are "):]

    def say(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def _join(server, count: int) -> list[Member]:
    """Members joined one by one: each join is seen by everyone already in the room."""
    members: list[Member] = []
    try:
        for _ in range(count):
            m = Member(server.address)
            assert m.name == f"127.0.0.1:{m.sock.getsockname()[1]}"
            members.append(m)
            for everyone in members:  # the newcomer included
                assert everyone.lines.readline() == f"* {m.name} joined"
    except BaseException:
        for m in members:
            m.close()
        raise
    return members


def test_every_member_gets_every_line_in_the_same_order(servers):
    members_count, lines_each = 5, 20
    server = servers(chat.handle, threads=2)
    members = _join(server, members_count)
    try:
        start = threading.Barrier(members_count)
        received: dict[int, list[str]] = {}
        errors: list[BaseException] = []

        def talk(i: int, m: Member) -> None:
            try:
                start.wait(10)
                for k in range(lines_each):
                    m.say(f"line {k} from member {i}")
                received[i] = [m.lines.readline() for _ in range(members_count * lines_each)]
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=talk, args=(i, m)) for i, m in enumerate(members)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors, errors
        assert sorted(received) == list(range(members_count))

        first = received[0]
        for i in range(1, members_count):
            assert received[i] == first, f"member {i} saw another order"
        expected = {f"{m.name}: line {k} from member {i}"
                    for i, m in enumerate(members) for k in range(lines_each)}
        assert len(first) == len(expected) and set(first) == expected
        for i, m in enumerate(members):  # each sender's lines keep their order
            own = [line for line in first if line.startswith(f"{m.name}: ")]
            assert own == [f"{m.name}: line {k} from member {i}" for k in range(lines_each)]
    finally:
        for m in members:
            m.close()


def test_a_member_who_leaves_is_announced_and_nick_renames(servers):
    server = servers(chat.handle)
    alice, bob = _join(server, 2)
    try:
        alice.say("/nick alice")
        for m in (alice, bob):
            assert m.lines.readline() == f"* {alice.name} is now alice"
        alice.say("hello")
        for m in (alice, bob):
            assert m.lines.readline() == "alice: hello"
        bob_name = bob.name
        bob.sock.shutdown(socket.SHUT_WR)  # bob is done talking
        assert alice.lines.readline() == f"* {bob_name} left"
        # bob's connection is closed by the server once he has left.
        with pytest.raises(EOFError):
            bob.lines.readline()
    finally:
        alice.close()
        bob.close()


def test_an_overlong_line_ends_only_that_member(servers):
    server = servers(chat.handle)
    alice, bob = _join(server, 2)
    try:
        bob.sock.sendall(b"x" * (chat.MAX_LINE + 10) + b"\n")
        assert alice.lines.readline() == f"* {bob.name} left"
        alice.say("still here")
        assert alice.lines.readline() == f"{alice.name}: still here"
    finally:
        alice.close()
        bob.close()
