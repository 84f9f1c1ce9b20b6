"""The patched primitives themselves: locks, select/poll/selectors, sleep, and plain threads.

Each test runs a short script in a subprocess (patching is process-global) that prints one
JSON line.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from .conftest import run_script

PRELUDE = """
import json, socket, threading, time
import fibernet
"""


def run(code: str, patch: bool = True, timeout: float = 30) -> dict:
    script = PRELUDE + ("fibernet.patch_all()\n" if patch else "") + textwrap.dedent(code)
    proc = run_script(["-c", script], timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Two fibers of one scheduler contend one lock; the holder suspends while holding it.
CONTEND = """
lock = threading.Lock()
order = []

def holder():
    with lock:
        order.append("holder in")
        fibernet.sleep(0.2)  # suspends this fiber, lock held
        order.append("holder out")

def waiter():
    with lock:
        order.append("waiter")

def main():
    a = fibernet.spawn(holder)
    b = fibernet.spawn(waiter)
    a.join(); b.join()

fibernet.run(main)
print(json.dumps(order))
"""


def test_fibers_contending_a_patched_lock_take_turns():
    assert run(f"{CONTEND}") == ["holder in", "holder out", "waiter"]


def test_fibers_contending_a_real_lock_deadlock_their_thread():
    """The same script unpatched: the waiter blocks the thread the holder needs."""
    with pytest.raises(subprocess.TimeoutExpired):
        run(CONTEND, patch=False, timeout=5)


def test_rlock_condition_event_semaphore_queue_between_fibers():
    result = run(
        """
        import queue
        rlock = threading.RLock()
        inside = []
        def reenter(name):
            with rlock:
                with rlock:  # re-entrant for its owner, the fiber
                    inside.append(name)
                    fibernet.sleep(0.05)
                    inside.append(len(inside))  # nobody else got in meanwhile

        q = queue.Queue(maxsize=1)
        def produce():
            for i in range(5):
                q.put(i)
            q.put(None)
        def consume():
            got = []
            while (item := q.get()) is not None:
                got.append(item)
            return got

        event = threading.Event()
        sem = threading.Semaphore(2)
        peak = [0, 0]
        def limited():
            with sem:
                peak[0] += 1
                peak[1] = max(peak)
                event.wait()
                peak[0] -= 1

        lock = threading.Lock()
        def timed_out():
            with lock:
                fibernet.sleep(0.3)
        def try_for_a_while():
            fibernet.sleep(0.01)
            start = time.monotonic()
            return lock.acquire(timeout=0.1), time.monotonic() - start

        def main():
            fs = [fibernet.spawn(reenter, n) for n in "ab"]
            p, c = fibernet.spawn(produce), fibernet.spawn(consume)
            ls = [fibernet.spawn(limited) for _ in range(5)]
            h, t = fibernet.spawn(timed_out), fibernet.spawn(try_for_a_while)
            fibernet.sleep(0.1)
            event.set()
            for f in fs + [p] + ls + [h]:
                f.join()
            return {"rlock": inside, "queue": c.join(), "peak": peak[1], "timed": t.join()}

        print(json.dumps(fibernet.run(main)))
        """
    )
    assert result["rlock"] in (["a", 1, "b", 3], ["b", 1, "a", 3])
    assert result["queue"] == [0, 1, 2, 3, 4]
    assert result["peak"] == 2
    acquired, waited = result["timed"]
    assert acquired is False and waited >= 0.1


def test_select_poll_and_selectors_suspend_only_the_fiber():
    """100 fibers each wait 0.5 s for their socket with select, poll or a selector: they
    wait together (well under the 50 s one after the other)."""
    result = run(
        """
        import select, selectors

        def wait_with(kind, r):
            if kind == "select":
                return bool(select.select([r], [], [], 5)[0])
            if kind == "poll":
                p = select.poll()
                p.register(r, select.POLLIN)
                return bool(p.poll(5000))
            with selectors.DefaultSelector() as sel:
                sel.register(r, selectors.EVENT_READ)
                return bool(sel.select(5))

        def one(kind):
            r, w = socket.socketpair()
            with r, w:
                fibernet.spawn(lambda: (fibernet.sleep(0.5), w.send(b"x")))
                return wait_with(kind, r)

        def timeouts():
            r, w = socket.socketpair()
            with r, w:
                start = time.monotonic()
                nothing = select.select([r], [], [], 0.2)
                return nothing == ([], [], []) and time.monotonic() - start >= 0.2

        def main():
            start = time.monotonic()
            fs = [fibernet.spawn(one, k) for k in ["select", "poll", "selector"] * 33]
            t = fibernet.spawn(timeouts)
            ready = [f.join() for f in fs]
            return {"ready": ready.count(True), "timeout": t.join(), "wall": time.monotonic() - start}

        print(json.dumps(fibernet.run(main)))
        """
    )
    assert result["ready"] == 99 and result["timeout"] is True
    assert result["wall"] < 2.0, result


def test_time_sleep_in_fibers_sleeps_together():
    result = run(
        """
        def main():
            start = time.monotonic()
            for f in [fibernet.spawn(time.sleep, 0.5) for _ in range(200)]:
                f.join()
            return time.monotonic() - start
        print(json.dumps(fibernet.run(main)))
        """
    )
    assert 0.5 <= result < 2.0


def test_patched_calls_in_a_plain_thread_block_as_before():
    """While a runtime runs on another thread, a plain thread's patched calls block it."""
    result = run(
        """
        import select
        out = {}
        def plain():
            start = time.monotonic()
            time.sleep(0.2)
            out["sleep"] = time.monotonic() - start
            r, w = socket.socketpair()
            with r, w:
                r.settimeout(0.2)
                start = time.monotonic()
                try:
                    r.recv(1)
                except TimeoutError:
                    out["recv_timeout"] = time.monotonic() - start
                start = time.monotonic()
                out["select_empty"] = select.select([r], [], [], 0.2) == ([], [], [])
                out["select"] = time.monotonic() - start
                r.settimeout(None)
                start = time.monotonic()
                threading.Timer(0.2, w.send, (b"x",)).start()
                out["recv"] = r.recv(1).decode()
                out["recv_wait"] = time.monotonic() - start
            lock = threading.Lock()
            lock.acquire()
            start = time.monotonic()
            threading.Timer(0.2, lock.release).start()
            out["lock"] = lock.acquire(timeout=5)
            out["lock_wait"] = time.monotonic() - start

        def main():
            t = threading.Thread(target=plain)
            t.start()
            done = fibernet.Condition()
            threading.Thread(target=lambda: (t.join(), done.signal())).start()
            done.wait()

        fibernet.run(main)
        print(json.dumps(out))
        """
    )
    for key in ("sleep", "recv_timeout", "select", "recv_wait", "lock_wait"):
        assert result[key] >= 0.2, (key, result)
    assert result["select_empty"] is True and result["recv"] == "x" and result["lock"] is True


def test_patching_twice_is_harmless_and_unpatch_restores():
    result = run(
        """
        import select, selectors, ssl
        std = socket.socket
        first = fibernet.patched()
        again = fibernet.patch_all()
        patched_class = socket.socket.__name__
        fibernet.unpatch_all()
        print(json.dumps({
            "first": first, "again": again, "class": patched_class,
            "after": fibernet.patched(),
            "restored": [socket.socket.__name__, time.sleep.__module__, threading.Lock.__module__,
                         selectors.DefaultSelector.__module__, ssl.SSLContext.sslsocket_class.__module__],
        }))
        """
    )
    assert result["first"] == result["again"]
    for name in (
        "socket.socket",
        "socket.getaddrinfo",
        "ssl.SSLContext.sslsocket_class",
        "select.select",
        "select.poll",
        "selectors.DefaultSelector",
        "time.sleep",
        "threading.Lock",
        "threading.RLock",
        "threading._allocate_lock",
        "queue.SimpleQueue",
    ):
        assert name in result["first"]
    assert result["class"] == "CooperativeSocket"
    assert result["after"] == []
    assert result["restored"] == ["socket", "time", "_thread", "selectors", "ssl"]


def test_name_resolution_runs_on_the_thread_pool_in_a_fiber():
    """A host name is resolved on a pool thread (getaddrinfo blocks whatever epoll says); an
    address, and any call from a plain thread, resolve in place."""
    result = run(
        """
        from fibernet.net.cooperative import getaddrinfo_of

        where = []
        def std(host, port, *args, **kwargs):
            where.append((host, threading.current_thread().name))
            return []
        resolve = getaddrinfo_of(std)

        def main():
            resolve("db.example", 5432)
            resolve("127.0.0.1", 5432, type=socket.SOCK_STREAM)
            return socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][1]

        port = fibernet.run(main)
        resolve("db.example", 5432)
        print(json.dumps({"where": where, "port": port, "patched": hasattr(socket.getaddrinfo, "__wrapped__")}))
        """
    )
    (named, pool), (literal, here), (plain, main_thread) = result["where"]
    assert (named, literal, plain) == ("db.example", "127.0.0.1", "db.example")
    assert pool.startswith("fibernet-pool") and here == "MainThread" and main_thread == "MainThread"
    assert result["port"] == 80 and result["patched"] is True
