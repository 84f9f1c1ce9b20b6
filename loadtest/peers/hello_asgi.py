"""HTTP hello as a raw ASGI app (no framework), for uvicorn: ``uvicorn --app-dir
loadtest/peers hello_asgi:app`` (``uvicorn_args``: httptools, uvloop, no lifespan, no access log)."""

from __future__ import annotations

import _serve

PATH = "/hello"


async def app(scope, receive, send):
    status, body = (200, _serve.BODY) if scope["path"] == PATH else (404, b"not found\n")
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def uvicorn_args(host: str, port: int) -> list[str]:
    """uvicorn's options serving ``app`` on host:port (after ``uvicorn`` or ``-m uvicorn``)."""
    return ["--http", "httptools", "--loop", "uvloop", "--lifespan", "off", "--no-access-log", "--log-level",
            "warning",
            "--host", host, "--port", str(port), "--app-dir", _serve.HERE, "hello_asgi:app"]

