"""Descriptor readiness as operations (readable_op / writable_op) over the scheduler's poller,
on real socketpairs: in choices with timers, closed under a waiting fiber, and registrations
given back when a wait loses."""

from __future__ import annotations

import errno
import os
import socket

import pytest

import fibernet as fn
from fibernet.net.readiness import notify_closing

pytestmark = pytest.mark.timeout(20)


def readable_or_timeout(f, seconds):
    return fn.perform(
        fn.choice(
            fn.wrap(fn.readable_op(f), lambda: "readable"), fn.wrap(fn.wait_op(seconds), lambda: "timeout")
        )
    )


def test_readable_op_waits_for_data(pair):
    a, b = pair

    def main():
        def writer():
            b.send(b"ping")

        assert readable_or_timeout(a, 0.02) == "timeout"  # nothing to read yet
        fn.spawn(writer)
        assert readable_or_timeout(a, 10) == "readable"
        return a.recv(10)

    assert fn.run(main) == b"ping"


def test_readable_op_accepts_a_descriptor_number_and_wakes_on_another_scheduler(pair):
    a, b = pair

    def main():
        other = fn.current_scheduler().runtime.schedulers[1]
        f = fn.spawn(
            lambda: fn.perform(fn.wrap(fn.readable_op(a.fileno()), lambda: a.recv(10))), scheduler=other
        )
        b.send(b"x")
        return f.join()

    assert fn.run(main, threads=2) == b"x"


def test_writable_op_completes_on_a_writable_socket_and_waits_on_a_full_one(pair):
    a, b = pair

    def main():
        assert fn.perform(fn.wrap(fn.writable_op(a), lambda: "writable")) == "writable"
        try:  # fill the socket buffer
            while True:
                a.send(b"\0" * 65536)
        except BlockingIOError:
            pass
        writable = fn.wrap(fn.writable_op(a), lambda: "writable")
        assert fn.perform(fn.choice(writable, fn.wrap(fn.wait_op(0.02), lambda: "timeout"))) == "timeout"

        def drain():
            try:
                while True:
                    b.recv(1 << 20)
            except BlockingIOError:
                pass

        fn.spawn(drain)
        return fn.perform(fn.choice(writable, fn.wrap(fn.wait_op(10), lambda: "timeout")))

    assert fn.run(main) == "writable"


def test_readable_op_in_a_choice_with_a_condition(pair):
    a, _b = pair

    def main():
        cond = fn.Condition()
        fn.spawn(cond.signal)
        r = fn.perform(
            fn.choice(
                fn.wrap(fn.readable_op(a), lambda: "readable"), fn.wrap(cond.wait_op(), lambda: "signalled")
            )
        )
        return r, fn.current_scheduler().watched_fds()

    assert fn.run(main) == ("signalled", 0)


def test_closing_a_descriptor_under_a_waiting_fiber_wakes_it_with_oserror():
    """Guile Fibers issue #80: a wait on a descriptor that is closed must not hang."""
    a, b = socket.socketpair()

    def main():
        sched = fn.current_scheduler()

        def reader():
            fn.perform(fn.readable_op(a))

        f = fn.spawn(reader)
        fn.yield_now()
        assert f.waiting_on() is not None and "readable" in f.waiting_on()
        notify_closing(a)
        a.close()
        with pytest.raises(OSError) as info:
            f.join()
        return info.value.errno, sched.watched_fds()

    try:
        assert fn.run(main) == (errno.EBADF, 0)
    finally:
        b.close()


def test_a_wait_that_lost_gives_back_its_registration(pair):
    a, _b = pair

    def main():
        sched = fn.current_scheduler()
        assert readable_or_timeout(a, 0.01) == "timeout"
        return sched.watched_fds(), sched.pending_timers()

    assert fn.run(main) == (0, 0)


def test_a_cancelled_wait_gives_back_its_registration(pair):
    a, _b = pair

    def main():
        sched = fn.current_scheduler()
        f = fn.spawn(lambda: fn.perform(fn.readable_op(a)))
        fn.yield_now()
        assert sched.watched_fds() == 1
        f.cancel()
        pytest.raises(fn.Cancelled, f.join)
        return sched.watched_fds()

    assert fn.run(main) == 0


def test_a_descriptor_number_reused_after_a_timed_out_wait_is_watched_again():
    """A wait times out; the socket is closed (nobody waits on it, so no notify_closing) and
    its number goes to a new socket: a wait on the new one must see its data."""

    def main():
        a, b = socket.socketpair()
        assert readable_or_timeout(a, 0.01) == "timeout"
        number = a.fileno()
        a.close()
        b.close()
        c, d = socket.socketpair()
        try:
            if d.fileno() == number:
                c, d = d, c
            assert c.fileno() == number  # the lowest free number is reused
            d.send(b"new")
            return readable_or_timeout(c, 5)
        finally:
            c.close()
            d.close()

    assert fn.run(main) == "readable"


def test_readable_op_refuses_what_is_not_a_descriptor():
    with pytest.raises(ValueError):
        fn.readable_op(-1)
    with pytest.raises(AttributeError):
        fn.writable_op("not a file")


def test_a_pipe_hang_up_counts_as_readable():
    r, w = os.pipe()

    def main():
        fn.spawn(os.close, w)
        return readable_or_timeout(r, 5), os.read(r, 1)

    try:
        assert fn.run(main) == ("readable", b"")
    finally:
        os.close(r)
