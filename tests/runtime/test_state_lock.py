"""The fibers' state locks (``fibernet.runtime.fiber.new_state_lock``): in the compiled copy a
``StateLock`` (C-level acquire and release on the hot path), in the pure modules a
``threading.Lock``.  Either way a lock with ``threading.Lock``'s behaviour, which the same
tests check here; and the compiled copy really makes StateLocks for its schedulers."""

from __future__ import annotations

import threading

import pytest

import fibernet as fn
from fibernet.runtime import compiled
from fibernet.runtime.fiber import StateLock, new_state_lock
from fibernet.runtime.scheduler import Scheduler

pytestmark = pytest.mark.timeout(30)


def test_a_state_lock_is_taken_once_and_released():
    lock = new_state_lock()
    assert not lock.locked()
    assert lock.acquire()
    assert lock.locked()
    assert not lock.acquire(False)  # not reentrant: a second take fails at once
    assert not lock.acquire(timeout=0.01)
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()  # releasing an unlocked lock is an error, as with threading.Lock


def test_a_blocked_acquire_waits_for_the_release_from_another_thread():
    lock = new_state_lock()
    lock.acquire()
    waiting, got = threading.Event(), []

    def taker():
        waiting.set()
        got.append(lock.acquire())  # blocks (the GIL released) until the release below
        lock.release()

    t = threading.Thread(target=taker)
    t.start()
    assert waiting.wait(10)
    assert not got  # (it cannot have the lock: this thread holds it)
    lock.release()
    t.join(10)
    assert not t.is_alive() and got == [True]
    assert not lock.locked()


def test_many_threads_take_a_state_lock_in_turn(switchinterval):
    lock, counts, n = new_state_lock(), [0], 2000

    def work():
        for _ in range(n):
            with lock:
                value = counts[0]
                counts[0] = value + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert counts[0] == 4 * n


def test_the_compiled_copy_gives_schedulers_and_fibers_state_locks():
    if not compiled().get("fibernet.runtime.fiber"):
        assert new_state_lock is threading.Lock
        pytest.skip("pure-Python modules: state locks are threading.Lock")
    assert new_state_lock is StateLock
    sched = Scheduler("state-locks")
    assert type(sched._state_lock) is StateLock
    assert type(fn.Fiber(lambda: None)._state_lock) is StateLock  # (a stripe, until it starts)

    def main():
        return type(fn.current_fiber()._state_lock)

    assert fn.run(main) is StateLock
