"""A chat room with two front doors: ``fibernet serve fibernet.examples.chat:handle`` (lines
over TCP) and ``fibernet serve fibernet.examples.chat:app --protocol http`` (a web page and a
WebSocket).  Members of both meet in the same room fiber.

Every connection fiber talks to one room fiber over channels; the room owns the member list
and nobody else touches it (share memory by communicating).  Each member has a bounded
outbox drained by a writer fiber of its own, and the room never blocks on a member: when a
member's outbox is full (a client that does not read), the room drops that member instead
of stalling everyone else.

Protocol: the server greets with ``* you are <name>``; every line a member sends reaches
every member, the sender included, as ``<name>: <line>``, in the order the room got them.
``/nick NAME`` renames.  Joins and leaves are announced as ``* ...`` lines.

With a bus (``fibernet serve ... --bus redis://host:port/db``, or ``FIBERNET_BUS``), each
process's room publishes what it would have broadcast to the bus topic ``chat`` and
broadcasts to its own members what comes back from it, so every worker and instance is one
room: every member gets every line, each sender's lines in the order sent.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading

import fibernet as fn
import fibernet.bus
from fibernet.examples._lines import write_lines
from fibernet.http import Request, Response, Router, WebSocketClosed
from fibernet.net.streams import LimitOverrun, Stream

OUTBOX = 256  # lines buffered per member before the room drops it
MAX_LINE = 4096
TOPIC = "chat"


def _new_process() -> None:
    """A tag of this process's own (drawn again in a forked worker) for the names of
    clients with no address: the workers and instances sharing a room over a bus each count
    from 1, so a count alone (local-1) was given out once per process."""
    global _TAG, _IDS
    _TAG, _IDS = secrets.token_hex(4), itertools.count(1)


_new_process()
os.register_at_fork(after_in_child=_new_process)


def _unique_name(kind: str) -> str:
    """``<kind>-<process tag>-<n>``: a name no other process of the room gives out."""
    return f"{kind}-{_TAG}-{next(_IDS)}"


class Room:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inbox: fn.Channel | None = None
        self._fiber: fn.Fiber | None = None

    def inbox(self) -> fn.Channel:
        """The room's channel, starting the room fiber on first use (per runtime)."""
        with self._lock:
            if self._fiber is None or self._fiber.done():
                self._inbox = fn.Channel(capacity=1024)
                bus = fibernet.bus.default() if fibernet.bus.configured() else None
                self._fiber = fn.spawn(self._run, self._inbox, bus, name="chat-room")
            return self._inbox

    @staticmethod
    def _events(inbox: fn.Channel, bus: fibernet.bus.Bus | None):
        """What the room acts on: its members' events, and with a bus, the lines of the
        whole room (``("line", None, text)``)."""
        if bus is None:
            yield from inbox
            return
        bus.wait_connected(bus.timeout)  # (a line said before the room subscribed is lost)
        with bus.subscribe(TOPIC) as lines:
            remote = fn.wrap(lines.get_op(), lambda text: ("line", None, text))
            while True:
                try:
                    yield fn.perform(fn.choice(inbox.get_op(), remote))
                except fn.ChannelClosed:
                    return

    @staticmethod
    def _run(inbox: fn.Channel, bus: fibernet.bus.Bus | None = None) -> None:
        members: dict[object, tuple[str, fn.Channel]] = {}

        def broadcast(text: str) -> None:
            line = (text + "\n").encode()
            for key, (_name, outbox) in list(members.items()):
                if not outbox.try_put(line):
                    del members[key]
                    outbox.close()  # its writer ends and the connection closes

        # With a bus, a line goes to the whole room and comes back to be broadcast here.
        announce = broadcast if bus is None else lambda text: bus.publish(TOPIC, text)
        for kind, key, arg in Room._events(inbox, bus):
            if kind == "line":
                broadcast(arg)
            elif kind == "join":
                name, outbox = arg
                members[key] = (name, outbox)
                announce(f"* {name} joined")
            elif kind == "say" and key in members:
                announce(f"{members[key][0]}: {arg}")
            elif kind == "nick" and key in members:
                old, outbox = members[key]
                members[key] = (arg, outbox)
                announce(f"* {old} is now {arg}")
            elif kind == "leave" and key in members:
                name, outbox = members.pop(key)
                outbox.close()
                announce(f"* {name} left")


ROOM = Room()


def said(inbox: fn.Channel, key: object, name: str, text: str) -> None:
    """What a member sent, whichever door it came in by: a line, or ``/nick NAME``."""
    if text.startswith("/nick "):
        inbox.put(("nick", key, text[6:].strip() or name))
    else:
        inbox.put(("say", key, text))


def handle(conn) -> None:
    inbox = ROOM.inbox()
    try:
        peer = conn.getpeername()
    except OSError:  # the client is gone already
        return
    # An IP peer is (host, port, ...); a Unix socket's client is a path, usually '' (unnamed).
    name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else _unique_name("local")
    key = object()
    outbox: fn.Channel = fn.Channel(capacity=OUTBOX)
    outbox.put(f"* you are {name}\n".encode())
    writer = fn.spawn(write_lines, conn, outbox, name=f"chat-writer {name}")
    stream = Stream(conn)
    inbox.put(("join", key, (name, outbox)))
    try:
        while line := stream.readline(MAX_LINE):
            said(inbox, key, name, line.rstrip(b"\r\n").decode("utf-8", "replace"))
    except LimitOverrun:
        pass
    finally:
        inbox.put(("leave", key, None))
        writer.join()


# -- the web front door: a page and a WebSocket, members of the same room ---------------------


def _page(request: Request) -> Response:
    return Response(200, PAGE, content_type="text/html; charset=utf-8")


def _websocket(request: Request) -> None:
    """One web member: one fiber waits on the WebSocket and the member's outbox at once."""
    ws = request.accept_websocket()
    inbox = ROOM.inbox()
    client = request.client
    name = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else _unique_name("web")
    key = object()
    outbox: fn.Channel = fn.Channel(capacity=OUTBOX)
    outbox.put(f"* you are {name}\n".encode())
    inbox.put(("join", key, (name, outbox)))
    came = fn.wrap(ws.recv_op(), lambda message: (True, message))
    due = fn.wrap(outbox.get_op(), lambda line: (False, line))
    try:
        while True:
            incoming, item = fn.perform(fn.choice(came, due))
            if not incoming:
                ws.send(item.decode().rstrip("\n"))
            elif len(item) > MAX_LINE:
                ws.close(1009, f"over {MAX_LINE} characters")
                return
            else:
                said(inbox, key, name, item if isinstance(item, str) else item.decode("utf-8", "replace"))
    except (WebSocketClosed, fn.ChannelClosed):  # the member left, or the room dropped it
        pass
    finally:
        inbox.put(("leave", key, None))


app = Router()
app.add("/", _page)
app.add("/ws", _websocket)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>fibernet chat</title>
<style>body{font:16px sans-serif;max-width:40em;margin:2em auto}#log{list-style:none;padding:0}</style>
</head><body>
<h1>fibernet chat</h1>
<ul id="log"></ul>
<form id="form"><input id="text" autocomplete="off" size="50" autofocus> <button>Send</button></form>
<p><small>/nick NAME renames you. The TCP chat (fibernet serve fibernet.examples.chat:handle)
is the same room.</small></p>
<script>
const log = document.getElementById("log");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/ws");
window.chat = {ws: ws, lines: []};
ws.onmessage = (event) => {
  window.chat.lines.push(event.data);
  const li = document.createElement("li");
  li.textContent = event.data;
  log.appendChild(li);
};
ws.onclose = (event) => { window.chat.closed = event.code; };
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (text.value) { ws.send(text.value); text.value = ""; }
};
</script>
</body></html>
"""
