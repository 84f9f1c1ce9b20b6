"""HTTP hello as a WSGI app: served by gevent.pywsgi (``log=None``) when run as a script, and
by gunicorn with gevent workers as ``hello_wsgi:app`` (``loadtest/sighup.py``)."""

from __future__ import annotations

import _serve

PATHS = ("/hello", "/")  # as fibernet.examples.hello answers


def app(environ, start_response):
    if environ["PATH_INFO"] in PATHS:
        status, body = "200 OK", _serve.BODY
    else:
        status, body = "404 Not Found", b"not found\n"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def serve(host: str, port: int) -> None:
    from gevent.pywsgi import WSGIServer

    server = WSGIServer((host, port), app, log=None)
    server.start()
    _serve.ready(server.server_port)
    server.serve_forever()


if __name__ == "__main__":
    _serve.main(serve, __doc__)
