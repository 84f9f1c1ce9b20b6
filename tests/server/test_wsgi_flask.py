"""A real Flask app served by ``fibernet serve`` (``--interface auto`` finds it is WSGI):
routes, JSON, a streamed response and a file download, over loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket

import pytest

from tests.cli.conftest import ServerProcess

pytestmark = pytest.mark.timeout(40)

FLASK_APP = '''
import os
from flask import Flask, Response, abort, jsonify, request, send_file, stream_with_context

app = Flask(__name__)
FILE = os.path.join(os.path.dirname(__file__), "download.bin")


@app.route("/")
def index():
    return "hello from flask"


@app.route("/users/<int:uid>")
def user(uid):
    if uid > 100:
        abort(404)
    return jsonify(id=uid, name=f"user{uid}", agent=request.headers.get("User-Agent"))


@app.route("/sum", methods=["POST"])
def total():
    data = request.get_json()
    return jsonify(sum=sum(data["numbers"]), count=len(data["numbers"])), 201


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "5"))

    @stream_with_context
    def gen():
        for i in range(n):
            yield f"line {i} of {request.path}\\n"

    return Response(gen(), mimetype="text/plain")


@app.route("/download")
def download():
    return send_file(FILE, as_attachment=True, download_name="data.bin")
'''


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flaskapp")
    (folder / "flask_app_for_test.py").write_text(FLASK_APP)
    payload = os.urandom(300_000)
    (folder / "download.bin").write_bytes(payload)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ServerProcess(
        ["flask_app_for_test:app", "--app-dir", str(folder), "--port", str(port), "--log-level", "info"],
        folder,
    )
    try:
        server.wait_for(f"on 127.0.0.1:{port}")
        yield port, payload, server
    finally:
        server.close()


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_routes_and_404(flask_server):
    port = flask_server[0]
    response, body = request(port, "GET", "/")
    assert (response.status, body) == (200, b"hello from flask")
    assert request(port, "GET", "/users/101")[0].status == 404
    assert request(port, "GET", "/nowhere")[0].status == 404


def test_json_both_ways(flask_server):
    port = flask_server[0]
    response, body = request(port, "GET", "/users/7", headers={"User-Agent": "probe/1"})
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(body) == {"id": 7, "name": "user7", "agent": "probe/1"}
    response, body = request(port, "POST", "/sum", json.dumps({"numbers": [1, 2, 3.5]}),
                             {"Content-Type": "application/json"})
    assert response.status == 201
    assert json.loads(body) == {"sum": 6.5, "count": 3}


def test_streamed_response(flask_server):
    port = flask_server[0]
    response, body = request(port, "GET", "/stream?n=50")
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert body.decode().splitlines() == [f"line {i} of /stream" for i in range(50)]


def test_file_download(flask_server):
    port, payload = flask_server[:2]
    response, body = request(port, "GET", "/download")
    assert response.status == 200
    assert body == payload
    assert response.getheader("Content-Length") == str(len(payload))
    assert "attachment" in response.getheader("Content-Disposition")
    # Keep-alive holds after a download with its own length: two on one connection.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/download")
            assert conn.getresponse().read() == payload
    finally:
        conn.close()
