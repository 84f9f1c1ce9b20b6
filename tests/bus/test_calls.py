"""Named actors across processes: an actor served by a child process, called from this one
with a timeout -- live, missing, hung, failing, and killed mid-call."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

import fibernet as fn
import fibernet.bus as fb
from fibernet.actors import ActorDead, start
from fibernet.net.threadpool import run_in_thread

pytestmark = pytest.mark.timeout(60)

HOST = textwrap.dedent(
    """
    import sys
    import fibernet as fn
    import fibernet.bus as fb
    from fibernet.actors import Actor, start
    from fibernet.net.threadpool import run_in_thread

    class Counter(Actor):
        def __init__(self):
            self.total = 0
        def handle_cast(self, n):
            self.total += n
        def handle_call(self, body):
            if body == "hang":
                fn.sleep(3600)
            if body == "fail":
                raise ValueError("no such thing")
            return {"total": self.total, "pid": __import__("os").getpid()}

    def main():
        bus = fb.connect(sys.argv[1], wait=10)
        ref = start(Counter(), name="counter")
        bus.register(ref)
        print("ready", flush=True)
        run_in_thread(sys.stdin.read)  # until the test closes it

    fn.run(main)
    """
)


@pytest.fixture
def host(redis):
    proc = subprocess.Popen([sys.executable, "-c", HOST, redis.url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


def test_a_call_to_an_actor_of_another_process_answers_within_its_timeout(redis, host):
    def main():
        bus = fb.connect(redis.url, wait=10)
        ref = bus.whereis("counter")
        for n in (1, 2, 3):
            ref.cast(n)  # casts from one process arrive in order, before the call
        answer = ref.call("total?", timeout=5.0)
        via_op = fn.perform(fn.choice(ref.call_op("again"), fn.wrap(fn.wait_op(5.0), lambda: "timeout")))
        bus.close()
        return answer, via_op

    answer, via_op = fn.run(main)
    assert answer == {"total": 6, "pid": host.pid}
    assert via_op == answer


def test_a_call_to_a_missing_actor_fails_at_once_and_a_hung_one_within_its_timeout(redis, host):
    def main():
        bus = fb.connect(redis.url, wait=10)
        missing = bus.whereis("nobody")
        t0 = time.monotonic()
        with pytest.raises(ActorDead, match="no process serves actor nobody"):
            bus.ref("nobody").call("hello", timeout=5.0)
        missing_took = time.monotonic() - t0
        with pytest.raises(ActorDead):
            bus.ref("nobody").cast("hello")
        ref = bus.whereis("counter")
        t0 = time.monotonic()
        with pytest.raises(fn.Timeout):
            ref.call("hang", timeout=0.3)
        hung_took = time.monotonic() - t0
        lost = fn.perform(fn.choice(ref.call_op("hang"), fn.wrap(fn.wait_op(0.2), lambda: "gave up")))
        bus.close()
        return missing, missing_took, hung_took, lost

    missing, missing_took, hung_took, lost = fn.run(main)
    assert missing is None
    assert missing_took < 2.0  # no waiting for the 5 s timeout (a generous bound)
    assert 0.3 <= hung_took < 3.0
    assert lost == "gave up"


def test_what_the_remote_actor_raises_reaches_the_caller(redis, host):
    def main():
        bus = fb.connect(redis.url, wait=10)
        with pytest.raises(fb.RemoteError, match="ValueError: no such thing"):
            bus.whereis("counter").call("fail", timeout=5.0)
        bus.close()

    fn.run(main)


def test_a_call_to_a_process_killed_mid_call_fails_within_its_timeout(redis, host):
    def main():
        bus = fb.connect(redis.url, wait=10)
        ref = bus.whereis("counter")
        call = fn.spawn(lambda: ref.call("hang", timeout=2.0))
        fn.sleep(0.1)  # (the call is on its way or waiting: either must fail)
        run_in_thread(host.kill)
        t0 = time.monotonic()
        with pytest.raises(fn.Timeout):
            call.join()
        took = time.monotonic() - t0
        with pytest.raises(ActorDead):  # the process is gone: nobody serves the name
            ref.call("hello", timeout=2.0)
        bus.close()
        return took

    assert fn.run(main) < 2.5


def test_names_are_held_by_one_process_and_released_when_the_actor_ends(redis):
    def main():
        a, b = fb.connect(redis.url, wait=10), fb.connect(redis.url, wait=10)
        ref = start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="echo")
        a.register(ref)
        with pytest.raises(ValueError, match="registered by another process"):
            b.register(start(lambda mailbox: None, name="echo"))
        answer = b.whereis("echo").call("hi", timeout=5.0)
        ref.stop()
        ref.join(5.0)
        while b.whereis("echo") is not None:
            fn.sleep(0.01)  # the name is given up as the actor ends
        a.close()
        b.close()
        return answer

    assert fn.run(main) == "hi"


def test_calls_fail_at_once_while_the_broker_is_unreachable(redis):
    def main():
        bus = fb.connect(redis.url, wait=10, backoff=(5.0, 5.0))
        run_in_thread(redis.stop)
        while bus.connected:
            fn.sleep(0.01)
        with pytest.raises(fb.BusUnavailable):
            bus.ref("anyone").call("hello", timeout=5.0)
        reason = fb.unready()
        bus.close()
        return reason

    reasons = fn.run(main)
    assert any("disconnected" in r for r in reasons)


class Picky:
    """A codec whose decode fails with something other than ValueError."""

    def encode(self, obj):
        return fb.JSON.encode(obj)

    def decode(self, data):
        if data == b'"boom"':
            raise TypeError("a codec bug")
        return fb.JSON.decode(data)


def test_garbage_on_the_bus_is_counted_and_the_bus_goes_on(redis):
    def main():
        a = fb.connect(redis.url, wait=10)
        b = fb.connect(redis.url, wait=10, codec=Picky())
        ref = start(lambda mailbox: [m.reply(m.body) for m in mailbox], name="echo")
        b.register(ref)
        sub = b.subscribe("t")
        for junk in (b"no colons", b"k:x:1:nan:{", b'c:x:1::"boom"'):
            a.command("PUBLISH", a._channel(b"a:", "echo"), junk)
        a.command("PUBLISH", b.names.inbox, b"not-a-number:ok:1")
        a.publish("t", "boom")  # b's codec raises TypeError on it
        a.publish("t", "fine")
        got = sub.get()
        answer = a.whereis("echo").call("still here", timeout=5.0)
        stats = dict(b.stats)
        a.close()
        b.close()
        ref.stop()
        return got, answer, stats

    got, answer, stats = fn.run(main)
    assert got == "fine" and answer == "still here"
    assert stats["malformed"] == 4  # two malformed requests, two messages the codec failed on
