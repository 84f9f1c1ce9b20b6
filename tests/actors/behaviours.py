"""Behaviours shared by the actor tests."""

from __future__ import annotations

import threading

import fibernet as fn
from fibernet import actors


class Echo(actors.Actor):
    """Replies with what it is sent; records casts; ``("fail", exc)`` makes it raise;
    ``"where"`` answers with the scheduler and thread it runs on."""

    def __init__(self) -> None:
        self.casts: list = []

    def handle_call(self, body):
        if body == "where":
            return fn.current_scheduler(), threading.get_ident()
        if isinstance(body, tuple) and body and body[0] == "fail":
            raise body[1]
        return body

    def handle_cast(self, body):
        if isinstance(body, tuple) and body and body[0] == "fail":
            raise body[1]
        if body == "stop":
            self.stop()
            return
        self.casts.append(body)


class Boom(Exception):
    """The failure the tests inject."""


class Placed(Echo):
    """An Echo that sets a ``threading.Event`` when it starts, wherever that is."""

    def __init__(self) -> None:
        super().__init__()
        self.landed = threading.Event()

    def started(self) -> None:
        self.landed.set()


def start_elsewhere(actor: Placed, **options) -> actors.ActorRef:
    """Start ``actor`` with ``parallel=True`` so that another scheduler runs it.

    This scheduler's thread waits (blocked, on purpose) until the actor has started: it cannot
    run the actor itself meanwhile, so an idle sibling steals it.  Then it checks where it is.
    """
    here = fn.current_scheduler()
    ref = actors.start(actor, parallel=True, **options)
    assert actor.landed.wait(10), "no scheduler started the parallel actor"
    where, _thread = ref.call("where")
    assert where is not here, "the parallel actor ran on the starting scheduler"
    return ref
