"""Named actors across processes: ``bus.register(ref)`` and ``bus.whereis(name)``.

A name is a key on the broker (``fibernet:<db>:n:<name>``) holding the id of the one bus that
serves it, under a lease (``LEASE`` seconds, renewed every third of that, and at once after a
reconnect), so a name is held by one process at a time and a process that dies lets go of it.
The serving bus subscribes to the actor's channel; a request is a PUBLISH to it, whose reply
(the number of receivers) tells the caller at once whether anybody serves the name -- a call
to a missing actor fails with :class:`~fibernet.actors.ActorDead` without waiting.

A :class:`RemoteRef` has the local reference's ``cast``, ``call(timeout=...)`` and
``call_op``.  A cast waits for the broker's acknowledgement (not the actor's).  A call is a
request with the caller's inbox and a correlation number; the serving process makes the
local call (bounded by the caller's timeout) and publishes the answer to that inbox.  What
the actor raises reaches the caller as :class:`RemoteError` (ActorDead, MailboxFull and
Timeout as themselves).  A call fails within its timeout whatever happens on the way; with
the broker unreachable, ``cast`` and ``call`` raise :class:`BusUnavailable` at once: requests
are never queued across a disconnect.  Casts from one process to one actor arrive in order.
"""

from __future__ import annotations

import itertools
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from fibernet.actors import DEFAULT_MAILBOX, ActorDead, ActorRef, MailboxFull
from fibernet.bus.resp import BusError, pack
from fibernet.errors import ChannelClosed, FibernetError, Timeout
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import Operation, choice, perform, with_nack, wrap
from fibernet.ops.timers import now, timer_op, wait_op
from fibernet.runtime.scheduler import spawn

if TYPE_CHECKING:
    from fibernet.bus.client import Bus

log = logging.getLogger("fibernet.bus")

LEASE = 10.0
_CLAIM = (
    "local v = redis.call('GET', KEYS[1]) "
    "if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "return 0"
)
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_STATUS = {b"dead": ActorDead, b"full": MailboxFull, b"timeout": Timeout}


class RemoteError(FibernetError):
    """The remote actor raised while handling the call: ``"<type>: <message>"``."""


class _Export:
    __slots__ = ("name", "ref", "channel", "inbox", "fiber")

    def __init__(self, name: str, ref: ActorRef, channel: bytes) -> None:
        self.name = name
        self.ref = ref
        self.channel = channel
        self.inbox: Channel = Channel(DEFAULT_MAILBOX)  # requests, in the order they came
        self.fiber: Any = None


class Names:
    """The bus's names: the actors this process serves, and its pending calls."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.inbox = bus._channel(b"i:", bus.id)
        self._exports: dict[str, _Export] = {}
        self._waiting: dict[int, Channel] = {}
        self._ids = itertools.count(1)
        self._kick: Channel = Channel(1)

    def channels(self) -> list[bytes]:
        """What the subscriber connection listens to for names."""
        return [self.inbox, *(e.channel for e in list(self._exports.values()))]

    def _key(self, name: str) -> bytes:
        return self.bus._channel(b"n:", name)

    # -- serving ------------------------------------------------------------------------------

    def register(self, ref: ActorRef, name: str | None = None) -> None:
        name = name or ref.name
        if name in self._exports:
            raise ValueError(f"actor name {name!r} is already registered on this bus")
        if self.bus.command("EVAL", _CLAIM, 1, self._key(name), self.bus.id, int(LEASE * 1000)) != 1:
            raise ValueError(f"actor name {name!r} is registered by another process")
        export = self._exports[name] = _Export(name, ref, self.bus._channel(b"a:", name))
        self.bus._listen(export.channel)
        export.fiber = spawn(self._serve, export, name=f"bus actor {name}")

    def _serve(self, export: _Export) -> None:
        ref = export.ref
        try:
            while True:
                request = perform(choice(export.inbox.get_op(), wrap(ref.exit_op(), lambda reason: None)))
                if request is None:
                    return
                kind, reply_to, corr, timeout, body = request
                if kind == b"k":
                    try:
                        ref.cast(body)  # waits for room in a full mailbox: casts stay in order
                    except ActorDead:
                        return
                else:
                    spawn(self._answer, ref, reply_to, corr, timeout, body, name=f"bus call to {export.name}")
        finally:
            self._unexport(export)

    def _answer(self, ref: ActorRef, reply_to: bytes, corr: bytes, timeout: float | None, body: Any) -> None:
        try:
            status, payload = b"ok", self.bus.codec.encode(ref.call(body, timeout=timeout))
        except (ActorDead, MailboxFull, Timeout) as exc:
            status = next(s for s, kind in _STATUS.items() if isinstance(exc, kind))
            payload = str(exc).encode()
        except Exception as exc:  # noqa: BLE001 - the caller gets it, as a local caller would
            status, payload = b"error", f"{type(exc).__name__}: {exc}".encode()
        frame = pack("PUBLISH", self.bus._channel(b"i:", reply_to), b"%s:%s:%s" % (corr, status, payload))
        self.bus._cmd.send(frame, None)  # the caller times out if this cannot go

    def _unexport(self, export: _Export) -> None:
        if self._exports.get(export.name) is not export:
            return
        del self._exports[export.name]
        try:
            self.bus._send_sub(pack("UNSUBSCRIBE", export.channel))
            self.bus.command("EVAL", _RELEASE, 1, self._key(export.name), self.bus.id)
        except FibernetError:
            pass  # the lease runs out by itself

    def release_all(self) -> None:
        self._kick.close()
        for export in list(self._exports.values()):
            if export.fiber is not None:
                export.fiber.cancel()
            self._unexport(export)

    def kick(self) -> None:
        """Renew the leases now (after a reconnect: the broker may have restarted empty)."""
        try:
            self._kick.try_put(None)
        except ChannelClosed:
            pass  # the bus is closing

    def keep(self) -> None:
        """The fiber that renews this process's leases."""
        while True:
            try:
                perform(choice(self._kick.get_op(), wait_op(LEASE / 3)))
            except ChannelClosed:
                return  # the bus is closing
            for export in list(self._exports.values()):
                try:
                    ours = self.bus.command(
                        "EVAL", _CLAIM, 1, self._key(export.name), self.bus.id, int(LEASE * 1000)
                    )
                except FibernetError:
                    continue  # disconnected: renewed after the reconnect
                if ours != 1:
                    log.error(
                        "bus: actor name %r was taken by another process; no longer served here", export.name
                    )
                    export.fiber.cancel()

    # -- the subscriber connection's messages -----------------------------------------------------

    def on_message(self, kind: bytes, channel: bytes, data: bytes) -> None:
        if kind == b"i:":
            corr, _, rest = data.partition(b":")
            status, _, payload = rest.partition(b":")
            waiter = self._waiting.pop(int(corr), None) if corr.isdigit() else None
            if waiter is not None:
                waiter.try_put((status, payload))
            return
        export = self._exports.get(channel[len(self.bus.prefix) + 2 :].decode())
        try:
            req, reply_to, corr, timeout, payload = data.split(b":", 4)
            request = (
                req,
                reply_to,
                corr,
                float(timeout) if timeout else None,
                self.bus.codec.decode(payload),
            )
        except ValueError:
            self.bus._count("malformed")
            return
        if export is None or not export.inbox.try_put(request):
            self.bus._count("requests_dropped")  # the caller gets its timeout

    # -- calling --------------------------------------------------------------------------------

    def whereis(self, name: str) -> RemoteRef | None:
        """A reference to the actor registered as ``name`` by any process, or None."""
        if self.bus.command("GET", self._key(name)) is None:
            return None
        return RemoteRef(self, name)

    def _expect(self) -> tuple[int, Channel]:
        corr = next(self._ids)
        reply = self._waiting[corr] = Channel(1)
        return corr, reply

    def _request(self, name: str, kind: bytes, corr: int, body: Any, timeout: float | None) -> None:
        """Publish a request; raises ActorDead at once if no process serves ``name``."""
        bus = self.bus
        limit = "" if timeout is None else repr(timeout)
        frame = b"%s:%s:%d:%s:%s" % (kind, bus.id.encode(), corr, limit.encode(), bus.codec.encode(body))
        try:
            receivers = bus.command("PUBLISH", bus._channel(b"a:", name), frame, timeout=timeout)
        except Timeout:
            raise Timeout(f"call to {name} timed out after {timeout}s (the broker did not answer)") from None
        if receivers == 0:
            raise ActorDead(f"no process serves actor {name}")

    def result(self, answer: tuple[bytes, Any]) -> Any:
        status, payload = answer
        if status == b"ok":
            return self.bus.codec.decode(payload)
        if status == b"raise":
            raise payload
        raise _STATUS.get(status, RemoteError)(payload.decode("utf-8", "replace"))


class RemoteRef:
    """A reference to an actor served by some process on the bus.  Same calls as
    :class:`~fibernet.actors.ActorRef`: ``cast``, ``call(timeout=...)``, ``call_op``."""

    __slots__ = ("_names", "name")

    def __init__(self, names: Names, name: str) -> None:
        self._names = names
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteRef {self.name} on {self._names.bus.address}>"

    def cast(self, body: Any) -> None:
        """Send ``body``; raises ActorDead if no process serves the actor."""
        self._names._request(self.name, b"k", 0, body, None)

    def call(self, body: Any, timeout: float | None = 5.0) -> Any:
        """Send ``body`` and wait for the answer: :class:`fibernet.Timeout` after ``timeout``
        seconds, ActorDead if nobody serves the actor or it ends first."""
        names = self._names
        deadline = None if timeout is None else now() + timeout
        corr, reply = names._expect()
        try:
            names._request(self.name, b"c", corr, body, timeout)
            ops = [reply.get_op()]
            if deadline is not None:
                ops.append(wrap(timer_op(deadline), partial(_timed_out, self.name, timeout)))
            return names.result(perform(choice(*ops)))
        finally:
            names._waiting.pop(corr, None)

    def call_op(self, body: Any) -> Operation:
        """The call as an operation; the request goes out when the choice is performed, and
        is forgotten if the choice takes another branch."""

        def make(nack: Operation) -> Operation:
            corr, reply = self._names._expect()
            taken = Condition()
            spawn(self._send, corr, reply, body, nack, taken, name=f"call_op to {self.name}")
            return wrap(reply.get_op(), partial(self._took, corr, taken))

        return with_nack(make)

    def _send(self, corr: int, reply: Channel, body: Any, nack: Operation, taken: Condition) -> None:
        try:
            self._names._request(self.name, b"c", corr, body, None)
        except (FibernetError, TypeError) as exc:
            reply.try_put((b"raise", exc))
        perform(choice(nack, taken.wait_op()))
        self._names._waiting.pop(corr, None)

    def _took(self, corr: int, taken: Condition, answer: tuple[bytes, Any]) -> Any:
        taken.signal()
        self._names._waiting.pop(corr, None)
        return self._names.result(answer)


def _timed_out(name: str, timeout: float) -> Any:
    raise Timeout(f"call to {name} timed out after {timeout}s")


__all__ = ["BusError", "RemoteError", "RemoteRef"]
