"""A fiber's exception that nobody retrieves is reported by its scheduler, at the end of the
turn in which the last reference to the fiber went away (then nobody can join it any more),
or when the runtime ends if someone still holds the fiber -- never from a finalizer, so never
late and never inside whatever code the garbage collector interrupted."""

from __future__ import annotations

import gc
import logging

import pytest

import fibernet as fn
from fibernet import actors

pytestmark = pytest.mark.timeout(20)


class Boom(Exception):
    pass


def fail():
    raise Boom("nobody joins me")


@pytest.fixture
def reports(caplog):
    """The "never joined" reports logged so far."""
    caplog.set_level(logging.ERROR)
    return lambda: [r for r in caplog.records if "never joined" in r.getMessage()]


@pytest.fixture
def no_gc():
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_a_failure_nobody_holds_is_reported_within_the_run(reports, spin_until, no_gc):
    """With the collector off: the report cannot come from a finalizer of a cycle."""

    def main():
        fn.spawn(fail, name="dropped-at-once")
        spin_until(lambda: reports(), "the report")
        return [r.getMessage() for r in reports()]

    assert fn.run(main) == ["fiber dropped-at-once raised and was never joined"]
    assert isinstance(reports()[0].exc_info[1], Boom)


def test_the_report_is_logged_by_the_scheduler_not_inside_the_collector(reports, spin_until):
    inside_collect = []

    class Probe(logging.Handler):
        def emit(self, record):
            if "never joined" in record.getMessage():
                inside_collect.append(collecting[0])

    collecting = [False]
    probe = Probe()
    logging.getLogger().addHandler(probe)
    try:

        def main():
            box = [fn.spawn(fail, name="in-a-cycle")]
            box.append(box)  # only the collector can free it
            del box
            fn.yield_now()
            collecting[0] = True
            gc.collect()
            collecting[0] = False
            spin_until(lambda: reports(), "the report")

        fn.run(main)
    finally:
        logging.getLogger().removeHandler(probe)
    assert inside_collect == [False]


def test_a_fiber_joined_later_by_its_holder_is_not_reported(reports):
    def main():
        f = fn.spawn(fail, name="joined-late")
        for _ in range(5):  # turns pass with the failed fiber unjoined but held
            fn.yield_now()
        assert f.done() and reports() == []
        with pytest.raises(Boom):
            f.join()

    fn.run(main)
    gc.collect()
    assert reports() == []


def test_a_failure_still_held_when_the_runtime_ends_is_reported_then(reports):
    held = []

    def main():
        held.append(fn.spawn(fail, name="held-past-the-end"))
        fn.yield_now()

    fn.run(main)  # no collection: the report comes from the runtime's end
    assert [r.getMessage() for r in reports()] == [
        "fiber held-past-the-end raised and was never joined (still held when its runtime ended)"
    ]


def test_a_failed_actor_is_reported_as_failed_not_also_as_never_joined(reports):
    class Fragile(actors.Actor):
        def handle_cast(self, body):
            raise Boom(body)

    def main():
        ref = actors.start(Fragile(), name="fragile")
        ref.cast("bang")
        fn.perform(ref.exit_op())

    fn.run(main)
    gc.collect()
    assert reports() == []
