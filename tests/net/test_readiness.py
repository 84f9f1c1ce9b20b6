"""readable_op / writable_op on fibernet sockets (registered edge-triggered, so an edge that
came while nobody waited is stored by the poller) and from plain threads (the thread blocks)."""

from __future__ import annotations

import socket

import pytest

import fibernet as fn
from fibernet.net.sockets import Socket
from fibernet.runtime.poller import EPOLLIN, EPOLLOUT

pytestmark = pytest.mark.timeout(20)


def _first(*branches):
    """Perform a choice of (op, label) pairs; the label of the branch that completed."""
    return fn.perform(fn.choice(*(fn.wrap(op, lambda *_value, label=label: label) for op, label in branches)))


def _registered_with_stored_edge(spin_until, events):
    """A fibernet Socket whose descriptor this scheduler's poller watches edge-triggered, with
    an edge for ``events`` stored while nobody waited; and its peer (a plain socket)."""
    a, b = socket.socketpair()
    c = Socket(a, timeout=0.01)
    with pytest.raises(TimeoutError):  # registers the descriptor, nothing to read
        c.recv(1)
    if events == EPOLLIN:
        b.send(b"x")
    watch = fn.current_scheduler()._poller._watches[c.fileno()]
    spin_until(lambda: watch.pending & events, "the poller to store the edge")
    return c, b


def test_readable_op_on_a_socket_sees_an_edge_that_came_while_nobody_waited(spin_until):
    def main():
        c, b = _registered_with_stored_edge(spin_until, EPOLLIN)
        try:
            got = _first((fn.readable_op(c), "readable"), (fn.wait_op(10), "timeout"))
            return got, c.recv(10)  # the data is still there for the socket's own reader
        finally:
            c.close()
            b.close()

    assert fn.run(main) == ("readable", b"x")


def test_writable_op_on_a_socket_sees_an_edge_that_came_while_nobody_waited(spin_until):
    def main():
        c, b = _registered_with_stored_edge(spin_until, EPOLLOUT)
        try:
            return _first((fn.writable_op(c), "writable"), (fn.wait_op(10), "timeout"))
        finally:
            c.close()
            b.close()

    assert fn.run(main) == "writable"


def test_a_stored_edge_whose_data_was_read_since_is_not_readiness(spin_until):
    def main():
        c, b = _registered_with_stored_edge(spin_until, EPOLLIN)
        try:
            assert c.sock.recv(10) == b"x"  # read behind the poller's back: the edge is stale
            assert _first((fn.readable_op(c), "readable"), (fn.wait_op(0.05), "timeout")) == "timeout"
            b.send(b"y")  # a new edge wakes a new wait
            assert _first((fn.readable_op(c), "readable"), (fn.wait_op(10), "timeout")) == "readable"
            return c.recv(10)
        finally:
            c.close()
            b.close()

    assert fn.run(main) == b"y"


# -- from a plain thread: the thread blocks in poll() --------------------------------------------


def test_readable_op_from_a_plain_thread_blocks_until_data(pair, start_thread):
    a, b = pair
    out = []
    ch = fn.Channel()

    def thread():
        ch.put("waiting")
        out.append(_first((fn.readable_op(a), "readable"), (fn.wait_op(10), "timeout")))

    ended = start_thread(thread)
    assert ch.get() == "waiting"
    b.send(b"x")
    ended.wait()
    assert out == ["readable"]


def test_readable_op_from_a_plain_thread_times_out_in_a_choice(pair):
    a, _b = pair
    assert _first((fn.readable_op(a), "readable"), (fn.wait_op(0.05), "timeout")) == "timeout"
    assert fn.perform(fn.wrap(fn.writable_op(a), lambda: "writable")) == "writable"


def test_a_plain_thread_waiting_on_a_descriptor_wakes_for_another_branch(pair, start_thread):
    """A channel put from another thread completes the choice of a thread blocked in poll()."""
    a, _b = pair
    ch = fn.Channel()
    out = []

    def thread():
        out.append(_first((fn.readable_op(a), "readable"), (ch.get_op(), "message")))

    ended = start_thread(thread)
    ch.put("hello")  # blocks until the thread's choice takes it
    ended.wait()
    assert out == ["message"]
