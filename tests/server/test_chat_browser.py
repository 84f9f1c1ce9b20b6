"""The chat's web front door in a real headless Chromium: two pages and a ``websockets``
client meet in the one room (the TCP chat's room fiber and channels), driven over the Chrome
DevTools protocol (CDP) with the ``websockets`` library."""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import time

import pytest
from websockets.sync.client import connect

from fibernet.examples import chat
from fibernet.testing import serve

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
]
WAIT = 15.0  # seconds any one step may take in the browser

pytestmark = pytest.mark.timeout(60)


class Browser:
    """A headless Chromium and one CDP connection to it (flat sessions, one per page)."""

    def __init__(self, chromium: str, profile) -> None:
        self._stack = contextlib.ExitStack()
        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        # Chromium writes the port it chose, and the browser's endpoint, when it listens.
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT
        while not (active.exists() and len(active.read_text().split()) == 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"chromium did not start its DevTools endpoint (exit {self.proc.returncode})")
            time.sleep(0.05)  # (waiting on another program's file: nothing to block on)
        port, path = active.read_text().split()
        self.cdp = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=WAIT)
        )
        self._ids = itertools.count(1)

    def call(self, method: str, session: str | None = None, **params):
        request_id = next(self._ids)
        message = {"id": request_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.cdp.send(json.dumps(message))
        while True:
            reply = json.loads(self.cdp.recv(timeout=WAIT))
            if reply.get("id") == request_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> str:
        """A new page at ``url``, once it has loaded (its script has run)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        while True:  # (the events of the session come on the one CDP connection)
            event = json.loads(self.cdp.recv(timeout=WAIT))
            if event.get("method") == "Page.loadEventFired" and event.get("sessionId") == session:
                return session

    def evaluate(self, session: str, expression: str):
        result = self.call(
            "Runtime.evaluate", session, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _lines_with(browser: Browser, page: str, text: str) -> list[str]:
    """The page's chat lines once one of them contains ``text`` (the page's own event loop
    waits for it; the promise fails after WAIT seconds)."""
    return browser.evaluate(page, f"""
        new Promise((resolve, reject) => {{
          const until = Date.now() + {WAIT * 1000};
          (function check() {{
            const lines = (window.chat && window.chat.lines) || [];
            if (lines.some(line => line.includes({json.dumps(text)}))) resolve(lines.slice());
            else if (Date.now() > until) reject(new Error("no line with " + {json.dumps(text)}
                                                          + " in " + JSON.stringify(lines)));
            else setTimeout(check, 10);
          }})();
        }})""")


def _type(browser: Browser, page: str, text: str) -> None:
    """Type ``text`` into the page's box and submit the form, as a user does."""
    browser.evaluate(page, f"""(() => {{
        document.getElementById("text").value = {json.dumps(text)};
        document.getElementById("form").requestSubmit();
    }})()""")


def _recv_until(ws, text: str) -> list[str]:
    lines = []
    while True:
        lines.append(ws.recv(timeout=WAIT))
        if text in lines[-1]:
            return lines


def test_two_pages_and_a_websockets_client_share_the_room(tmp_path, requires):
    with serve(chat.app, "http") as server:
        host, port = server.address[:2]
        base = f"http://{host}:{port}/"
        browser = Browser(requires("chromium"), tmp_path / "profile")
        try:
            first = browser.open(base)
            first_name = _lines_with(browser, first, "* you are ")[0][len("* you are "):]
            second = browser.open(base)
            second_name = _lines_with(browser, second, "* you are ")[0][len("* you are "):]
            _lines_with(browser, first, f"* {second_name} joined")

            with connect(f"ws://{host}:{port}/ws", open_timeout=WAIT) as py:
                py_name = py.recv(timeout=WAIT)[len("* you are "):]
                for page in (first, second):
                    _lines_with(browser, page, f"* {py_name} joined")

                _type(browser, first, "hello from page one")
                for page in (first, second):
                    _lines_with(browser, page, f"{first_name}: hello from page one")
                _recv_until(py, f"{first_name}: hello from page one")

                py.send("hello from python")
                for page in (first, second):
                    _lines_with(browser, page, f"{py_name}: hello from python")
                _recv_until(py, f"{py_name}: hello from python")

                _type(browser, second, "/nick second")
                _lines_with(browser, first, f"* {second_name} is now second")
                _type(browser, second, "renamed")
                _lines_with(browser, first, "second: renamed")
                assert _recv_until(py, "second: renamed")[-1] == "second: renamed"

            for page in (first, second):
                _lines_with(browser, page, f"* {py_name} left")
            # Every member saw the lines in the room's one order.
            one = [line for line in _lines_with(browser, first, "left") if not line.startswith("* you are")]
            two = [line for line in _lines_with(browser, second, "left") if not line.startswith("* you are")]
            assert one[one.index(f"* {py_name} joined"):] == two[two.index(f"* {py_name} joined"):]
        finally:
            browser.close()
