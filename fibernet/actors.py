"""Actors: a fiber that owns its state and a mailbox, reached only through a reference.

Built on the operations layer alone (no sockets).  A message from one sender arrives in the
order sent (the mailbox is a FIFO channel).  Mailboxes are bounded; a sender to a full one
either waits (``full="block"``, the default) or fails at once (``full="fail"``).

- ``ref.cast(msg)``: send and go on; fails fast with :class:`ActorDead` on a dead actor.
- ``ref.call(msg, timeout=5.0)``: request and reply; the timeout is a timer in a choice --
  from a fiber, the choice fused as channels fuse theirs: one OpState whose branch 0 is the
  reply and branch 1 the timer, whichever completes it first (under the state's lock).
- ``ref.call_op(msg)``: the call as an operation, to sit in a choice with other operations.
  The request is sent when the choice is performed (on a full mailbox a fiber of its own
  waits for room, withdrawn if the choice takes another branch); the reply channel holds
  one message, so an actor answering a call whose caller chose another branch never
  blocks.  A call to an actor that ends before it replies fails with :class:`ActorDead`;
  it never hangs.

Two ways to write one: a subclass of :class:`Actor` with ``handle_call`` / ``handle_cast``
(the common case, like OTP's gen_server), or a plain function ``fn(mailbox, *args)`` that
loops on ``mailbox.receive()`` and answers calls with ``message.reply(value)``.

Monitors and links: ``ref.exit_op()`` completes with the actor's exit reason (None for a
normal end) when it ends; ``link(a, b)`` stops each when the other fails.  A
:class:`Supervisor` restarts its children, one-for-one or one-for-all, within a maximum
restart intensity (OTP's ``intensity`` restarts in ``period`` seconds), and gives up --
stopping its children and failing with :class:`SupervisorGaveUp` -- beyond it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from fibernet.errors import Cancelled, ChannelClosed, FibernetError, Timeout
from fibernet.ops.channel import Channel
from fibernet.ops.condition import Condition
from fibernet.ops.operation import Operation, OpState, choice, perform, with_nack, wrap
from fibernet.ops.timers import now as _now
from fibernet.ops.timers import timer_op, wait_op
from fibernet.runtime.fiber import RUNNING, SUSPENDED, Fiber
from fibernet.runtime.scheduler import _tls, spawn

log = logging.getLogger("fibernet.actors")

DEFAULT_MAILBOX = 1024
_ids = itertools.count(1)


class ActorDead(FibernetError):
    """The actor has ended (before or during the call)."""


class MailboxFull(FibernetError):
    """The actor's mailbox is full and it was made with ``full="fail"``."""


class SupervisorGaveUp(FibernetError):
    """Children failed more often than the supervisor's restart intensity allows."""


class Message:
    """What a receive loop gets: ``body``, and ``reply(value)`` for a call (None for a cast)."""

    __slots__ = ("body", "_reply", "_inflight")

    def __init__(self, body: Any, reply: OpState | Channel | None) -> None:
        self.body = body
        # Where the answer goes: the waiting caller's OpState (``call`` from a fiber: the
        # reply completes it directly), or a one-slot channel (``call_op``, plain threads).
        self._reply = reply
        self._inflight: set | None = None

    @property
    def is_call(self) -> bool:
        return self._reply is not None

    def reply(self, value: Any) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        if type(reply) is OpState:
            reply.complete(0, value)  # a no-op if the caller timed out or was cancelled
        else:
            reply.try_put(value)  # capacity 1: never blocks, even if the caller left
        inflight = self._inflight
        if inflight is not None:
            self._inflight = None
            inflight.discard(self)

    def fail(self, exc: BaseException) -> None:
        """Answer a call with an exception, raised again in the caller."""
        self.reply(_Failure(exc))

    def __repr__(self) -> str:
        return f"<Message {'call' if self.is_call else 'cast'} {self.body!r}>"


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Mailbox:
    """The receiving end, given to a receive loop."""

    __slots__ = ("_channel", "_inflight")

    def __init__(self, channel: Channel, inflight: set) -> None:
        self._channel = channel
        self._inflight = inflight  # calls taken and not answered yet: failed if the actor ends

    def _track(self, message: Message) -> Message:
        if message._reply is not None:
            message._inflight = self._inflight
            self._inflight.add(message)
        return message

    def receive(self) -> Message:
        return self._track(self._channel.get())

    def receive_op(self) -> Operation:
        return wrap(self._channel.get_op(), self._track)

    def __iter__(self):
        for message in self._channel:
            yield self._track(message)


class ActorRef:
    """The only way to reach an actor.  Safe to share between fibers and threads."""

    __slots__ = ("name", "_mailbox", "_fiber", "_exit", "_full", "_inflight", "__weakref__")

    def __init__(self, name: str, capacity: int, full: str) -> None:
        if full not in ("block", "fail"):
            raise ValueError(f"full must be 'block' or 'fail', not {full!r}")
        self.name = name
        self._mailbox: Channel[Message] = Channel(capacity)
        self._fiber: Fiber | None = None
        self._exit = Condition()
        self._full = full
        self._inflight: set = set()

    def __repr__(self) -> str:
        return f"<ActorRef {self.name} {'alive' if self.alive else 'dead'}>"

    @property
    def alive(self) -> bool:
        return not self._exit.signalled

    @property
    def exit_reason(self) -> BaseException | None:
        """Why the actor ended: None for a normal end, else its exception."""
        fiber = self._fiber
        if fiber is None or not fiber.done():
            return None
        return fiber.exception()

    def _try_send(self, message: Message) -> bool:
        """Put ``message`` in the mailbox if there is room now.  Raises ActorDead if the actor
        has ended, MailboxFull if there is no room and the mailbox fails fast."""
        if self._exit._signalled:
            raise ActorDead(f"actor {self.name} has ended")
        try:
            sent = self._mailbox.try_put(message)
        except ChannelClosed:
            raise ActorDead(f"actor {self.name} has ended") from None
        if not sent and self._full == "fail":
            raise MailboxFull(f"mailbox of {self.name} is full")
        return sent

    def _send(self, message: Message, expired: Operation | None = None) -> None:
        if self._try_send(message):  # room now, the common case: nothing to perform
            return
        ops = [self._mailbox.put_op(message), wrap(self._exit.wait_op(), self._dead)]
        if expired is not None:  # a call's deadline also bounds its wait for room
            ops.append(expired)
        try:
            perform(choice(*ops))
        except ChannelClosed:
            raise ActorDead(f"actor {self.name} has ended") from None

    def _dead(self) -> Any:
        raise ActorDead(f"actor {self.name} ended during the call")

    def cast(self, body: Any) -> None:
        """Send ``body`` without waiting for an answer."""
        self._send(Message(body, None))

    def call_op(self, body: Any) -> Operation:
        """The call as an operation: completes with the reply, or raises ActorDead.

        The request is sent when the choice is performed.  If the mailbox is full (and
        blocks), a fiber of its own (on the actor's scheduler, if the caller is a plain
        thread) waits for room, so the choice is not held up: if the
        choice takes another branch first, the request is withdrawn (CML's withNack)."""

        def make(nack: Operation) -> Operation:
            reply: Channel = Channel(1)
            message = Message(body, reply)
            if not self._try_send(message):
                # From a plain thread, the actor's own scheduler runs the fiber that waits.
                sched = getattr(_tls, "scheduler", None) or self._fiber.scheduler
                spawn(self._send_later, message, nack, name=f"call_op to {self.name}", scheduler=sched)
            return wrap(reply.get_op(), _unwrap)

        return with_nack(make)

    def _send_later(self, message: Message, nack: Operation) -> None:
        """Wait for room for ``message`` until the call is given up (``nack``) or the actor
        ends (then the caller gets ActorDead)."""
        try:
            outcome = perform(
                choice(
                    wrap(self._mailbox.put_op(message), lambda: "sent"),
                    wrap(nack, lambda: "withdrawn"),
                    wrap(self._exit.wait_op(), lambda: "ended"),
                )
            )
        except ChannelClosed:  # the mailbox closes as the actor ends
            outcome = "ended"
        if outcome == "ended":
            message.fail(ActorDead(f"actor {self.name} has ended"))

    def call(self, body: Any, timeout: float | None = 5.0) -> Any:
        """Send ``body`` and wait for the reply (raises :class:`fibernet.Timeout` after
        ``timeout`` seconds, :class:`ActorDead` if the actor ends first)."""
        sched = getattr(_tls, "scheduler", None)
        fiber = sched.current if sched is not None else None
        if fiber is None:
            return self._call_generic(body, timeout)
        # From a fiber: the reply completes the caller's own wait state directly (no reply
        # channel, no choice); a timeout is one timer on the scheduler's heap.
        state = OpState(fiber, sched, self._what_call)
        message = Message(body, state)
        deadline = None if timeout is None else sched.clock.now() + timeout
        if not self._try_send(message):  # a full mailbox that blocks: _send waits for room
            self._send(message, None if deadline is None else self._expired_op(deadline, timeout))
        with fiber._state_lock:  # (state.lock)
            if not state.done:
                if fiber._cancel_pending:
                    fiber._cancel_pending = False
                    state.done = True  # the answer, if any, is dropped
                    raise Cancelled()
                fiber._op_state = state
                fiber.state = SUSPENDED
        if not state.done or state.woken:  # (woken: the answer came already; take its wake-up)
            if deadline is None:
                sched._park()
            else:
                timers = sched._timers
                timer = timers.add(deadline, partial(state.complete, 1, None))
                try:
                    sched._park()
                finally:  # (also when killed at shutdown)
                    timers.cancel(timer)  # (a no-op if it fired)
            fiber._op_state = None
            fiber.state = RUNNING
            index = state.index
            if index:
                if index == 1:
                    raise Timeout(f"call to {self.name} timed out after {timeout}s")
                with fiber._state_lock:
                    fiber._cancel_pending = False
                raise Cancelled()
        value = state.value
        if type(value) is _Failure:
            raise value.exc
        return value

    def _call_generic(self, body: Any, timeout: float | None) -> Any:
        """``call`` through operations (from a plain thread: the thread blocks)."""
        reply: Channel = Channel(1)
        if timeout is None:
            self._send(Message(body, reply))
            return _unwrap(reply.get())
        # One deadline for the whole call: waiting for room in a full mailbox counts too.
        expired = self._expired_op(_now() + timeout, timeout)
        self._send(Message(body, reply), expired)
        return _unwrap(perform(choice(reply.get_op(), expired)))

    def _expired_op(self, deadline: float, timeout: float) -> Operation:
        return wrap(
            timer_op(deadline),
            lambda: _raise(Timeout(f"call to {self.name} timed out after {timeout}s")),
        )

    def _what_call(self) -> str:
        return f"call to actor {self.name}"

    def exit_op(self) -> Operation:
        """Completes when the actor ends, with its exit reason (None: a normal end)."""
        return wrap(self._exit.wait_op(), lambda: self.exit_reason)

    def stop(self) -> None:
        """Stop the actor (it is cancelled at its next suspension).  Thread-safe."""
        if self._fiber is not None:
            self._fiber.cancel()

    def join(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the actor to end; returns its exit reason (never raises it)."""
        op = self.exit_op()
        if timeout is not None:
            op = choice(op, wrap(wait_op(timeout), lambda: _raise(Timeout(f"{self.name} still running"))))
        return perform(op)


def _unwrap(value: Any) -> Any:
    if type(value) is _Failure:
        raise value.exc
    return value


def _raise(exc: BaseException) -> Any:
    raise exc


class Actor:
    """Subclass and define ``handle_call(msg) -> reply`` and/or ``handle_cast(msg)``;
    ``started()`` runs first, ``stopped(reason)`` last.  ``self.ref`` is the actor's
    reference; ``self.stop()`` ends it after the current message."""

    ref: ActorRef

    def started(self) -> None:
        pass

    def handle_call(self, body: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not take calls")

    def handle_cast(self, body: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not take casts")

    def stopped(self, reason: BaseException | None) -> None:
        pass

    def stop(self) -> None:
        self._stopping = True

    def _loop(self, mailbox: Mailbox) -> None:
        self._stopping = False
        self.started()
        reason: BaseException | None = None
        get = mailbox._channel.get  # the loop answers what it takes: no in-flight tracking
        message = None
        try:
            while not self._stopping:
                message = get()
                if message._reply is not None:
                    try:
                        value = self.handle_call(message.body)
                    except Exception as exc:
                        message.fail(exc)  # the caller gets it; the actor fails too
                        raise
                    message.reply(value)
                else:
                    self.handle_cast(message.body)
                message = None
        except BaseException as exc:
            reason = exc
            if message is not None and message._reply is not None:
                mailbox._inflight.add(message)  # failed with ActorDead once the end is visible
            raise
        finally:
            self.stopped(reason)


# -- starting, names, links ---------------------------------------------------------------

_registry: dict[str, ActorRef] = {}
_registry_lock = threading.Lock()


def whereis(name: str) -> ActorRef | None:
    """The live actor registered under ``name``, or None."""
    with _registry_lock:
        ref = _registry.get(name)
    return ref if ref is not None and ref.alive else None


def start(
    behaviour: Actor | Callable[..., Any],
    *args: Any,
    name: str | None = None,
    register: bool = False,
    parallel: bool = False,
    mailbox: int = DEFAULT_MAILBOX,
    full: str = "block",
) -> ActorRef:
    """Start an actor: an :class:`Actor` instance, or a function ``fn(mailbox, *args)``.

    It runs on the current scheduler, or on any (``parallel=True``).  With
    ``register=True`` its ``name`` is entered in the registry (see :func:`whereis`).
    """
    if isinstance(behaviour, Actor):
        label = name or f"{type(behaviour).__name__}-{next(_ids)}"
        body: Callable[..., Any] = behaviour._loop
    elif callable(behaviour):
        label = name or f"{getattr(behaviour, '__name__', 'actor')}-{next(_ids)}"
        body = behaviour
    else:
        raise TypeError(f"an actor is an Actor instance or a function, not {type(behaviour).__name__}")
    ref = ActorRef(label, mailbox, full)
    if isinstance(behaviour, Actor):
        behaviour.ref = ref
    if register:
        with _registry_lock:
            current = _registry.get(label)
            if current is not None and current.alive:
                raise ValueError(f"an actor named {label!r} is already registered")
            _registry[label] = ref
    try:
        ref._fiber = spawn(
            body, Mailbox(ref._mailbox, ref._inflight), *args, name=f"actor {label}", parallel=parallel
        )
    except BaseException:
        if register:  # do not leave a name taken by an actor that never existed
            with _registry_lock:
                if _registry.get(label) is ref:
                    del _registry[label]
        raise
    ref._fiber.add_done_callback(lambda fiber: _ended(ref, fiber))
    return ref


def _ended(ref: ActorRef, fiber: Fiber) -> None:
    ref._mailbox.close()  # senders blocked on a full mailbox fail with ActorDead
    reason = fiber.exception()
    if reason is not None and not isinstance(reason, Cancelled):
        log.error("actor %s failed: %r", ref.name, reason)
    ref._exit.signal()
    with _registry_lock:
        if _registry.get(ref.name) is ref:
            del _registry[ref.name]
    # A call is answered by the actor or failed here (after the end is visible: a caller that
    # gets ActorDead sees ref.alive False): those it took and did not answer, and those still
    # in its mailbox.  So a caller waits on its reply channel alone.
    pending = list(ref._inflight)
    while True:
        try:
            message = ref._mailbox.try_get()
        except ChannelClosed:
            break
        if message is None:
            break
        pending.append(message)
    for message in pending:
        message.fail(ActorDead(f"actor {ref.name} ended during the call"))


def link(a: ActorRef, b: ActorRef) -> None:
    """When either actor fails (ends with an exception), stop the other."""

    def watch(one: ActorRef, other: ActorRef) -> None:
        reason = perform(one.exit_op())
        if reason is not None:
            other.stop()

    spawn(watch, a, b, name=f"link {a.name}->{b.name}")
    spawn(watch, b, a, name=f"link {b.name}->{a.name}")


# -- supervision ----------------------------------------------------------------------------


class ChildSpec:
    """How to (re)start a child: ``start(make(), name=name, ...)``.  ``make`` returns a fresh
    :class:`Actor` (a class works) or a receive-loop function (use functools.partial for
    arguments); children are registered under their name, so ``whereis(name)`` finds the
    current incarnation after a restart."""

    def __init__(
        self,
        name: str,
        make: Callable[[], Actor | Callable[..., Any]],
        *,
        register: bool = True,
        parallel: bool = False,
        mailbox: int = DEFAULT_MAILBOX,
    ) -> None:
        self.name = name
        self.make = make
        self.register = register
        self.parallel = parallel
        self.mailbox = mailbox

    def start(self) -> ActorRef:
        behaviour = self.make()
        if isinstance(behaviour, type) or not (isinstance(behaviour, Actor) or callable(behaviour)):
            raise TypeError(f"ChildSpec {self.name}: make() must return an Actor or a function")
        return start(
            behaviour, name=self.name, register=self.register, parallel=self.parallel, mailbox=self.mailbox
        )


class Supervisor(Actor):
    """Restarts failed children.  ``strategy``: "one_for_one" restarts the child that
    failed; "one_for_all" stops and restarts them all.  More than ``intensity`` restarts
    within ``period`` seconds and the supervisor stops its children and fails with
    :class:`SupervisorGaveUp`.  A child that ends normally is not restarted."""

    def __init__(
        self,
        children: Iterable[ChildSpec],
        strategy: str = "one_for_one",
        intensity: int = 3,
        period: float = 5.0,
    ) -> None:
        if strategy not in ("one_for_one", "one_for_all"):
            raise ValueError(f"strategy must be one_for_one or one_for_all, not {strategy!r}")
        self.specs = list(children)
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.children: dict[str, ActorRef] = {}
        self.restarts: list[float] = []

    def _loop(self, mailbox: Mailbox) -> None:
        for spec in self.specs:
            self.children[spec.name] = spec.start()
        try:
            while True:
                ops = [
                    wrap(ref.exit_op(), lambda reason, n=n: ("exit", n, reason))
                    for n, ref in self.children.items()
                ]
                event = perform(choice(wrap(mailbox.receive_op(), lambda m: ("msg", None, m)), *ops))
                kind, child, payload = event
                if kind == "msg":
                    self._command(payload)
                    continue
                if payload is None:  # a normal end: not restarted
                    del self.children[child]
                    continue
                self._restart(child, payload)
        finally:
            for ref in self.children.values():
                ref.stop()
            for ref in self.children.values():
                ref.join(timeout=5.0)

    def start_child(self, spec: ChildSpec) -> ActorRef:
        """Add a child while running (call it through the supervisor's ref:
        ``sup.call(("start_child", spec))``); an existing live child of that name is kept."""
        ref = self.children.get(spec.name)
        if ref is None or not ref.alive:
            if all(s.name != spec.name for s in self.specs):
                self.specs.append(spec)
            ref = self.children[spec.name] = spec.start()
        return ref

    def _command(self, message: Message) -> None:
        body = message.body
        if isinstance(body, tuple) and body and body[0] == "start_child":
            try:
                message.reply(self.start_child(body[1]))
            except Exception as exc:  # noqa: BLE001 - a bad spec fails the caller, not us
                message.fail(exc)
        else:
            message.reply(dict(self.children))

    def _restart(self, child: str, reason: BaseException) -> None:
        now = _now()  # the scheduler's clock (a MockClock in tests), as timers use
        self.restarts = [t for t in self.restarts if now - t < self.period] + [now]
        if len(self.restarts) > self.intensity:
            raise SupervisorGaveUp(
                f"{len(self.restarts)} restarts in {self.period}s (child {child} failed with {reason!r})"
            )
        spec = next(s for s in self.specs if s.name == child)
        if self.strategy == "one_for_one":
            self.children[child] = spec.start()
            return
        for ref in self.children.values():
            ref.stop()
        for ref in self.children.values():
            ref.join(timeout=5.0)
        for s in self.specs:  # a child that had ended normally left self.children: it stays ended
            if s.name in self.children:
                self.children[s.name] = s.start()
