"""HTTP hello on aiohttp: an ``aiohttp.web`` application on the default asyncio loop, access
log off."""

from __future__ import annotations

import _serve


def serve(host: str, port: int) -> None:
    from aiohttp import web

    async def hello(request):
        return web.Response(text=_serve.BODY.decode())  # text/plain; charset=utf-8

    app = web.Application()
    app.router.add_get("/hello", hello)
    sock = _serve.listen(host, port)
    _serve.ready(sock.getsockname()[1])
    web.run_app(app, sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    _serve.main(serve, __doc__)
