"""Hello world over HTTP: ``fibernet serve fibernet.examples.hello:app`` (the module says
``PROTOCOL = "http"``, so no ``--protocol`` flag is needed)."""

from fibernet.http import Response

PROTOCOL = "http"

_HELLO = Response(200, b"Hello, World!", headers={"content-type": "text/plain"})


def app(request):
    if request.path == "/hello" or request.path == "/":
        return _HELLO
    return Response(404, b"not found\n", content_type="text/plain")
