"""Run in a subprocess by the tests: COUNT fibers on one scheduler, each making one request
with LIBRARY to a server that answers after 0.5 s; prints {"wall": seconds, "results": ...}.
For the PostgreSQL drivers the fibers open their connections first ("connect_wall"): the
bar times the requests.

    python clients.py LIBRARY TARGET COUNT [--patch]

With ``--patch`` it calls ``fibernet.patch_all()`` first, before importing the library, as
``fibernet serve --patch`` does.  TARGET is host:port (HTTP, Redis) or a PostgreSQL DSN.
"""

from __future__ import annotations

import collections
import json
import sys
import time

import fibernet

DELAY = 0.5  # what the servers of the tests wait before they answer
TIMEOUT = 30.0  # no client call may hang the test longer than this


def http_client(target: str, i: int) -> object:
    import http.client

    host, port = target.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("GET", f"/slow/{i}")
        response = conn.getresponse()
        return response.status if response.read() == b"slow" else "bad body"
    finally:
        conn.close()


_pools: dict = {}


def requests_(target: str, i: int) -> object:
    import requests

    # One session shared by every fiber, as an application would: its pool is patched too.
    session = _pools.get("requests")
    if session is None:
        session = _pools["requests"] = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=1000))
    response = session.get(f"http://{target}/slow/{i}", timeout=TIMEOUT)
    return response.status_code if response.content == b"slow" else "bad body"


def urllib3_(target: str, i: int) -> object:
    import urllib3

    # One pool shared by every fiber: its connection queue and lock are patched ones.
    pool = _pools.get(target) or _pools.setdefault(target, urllib3.PoolManager(maxsize=1000))
    response = pool.request("GET", f"http://{target}/slow/{i}", timeout=TIMEOUT)
    return response.status if response.data == b"slow" else "bad body"


def redis_(target: str, i: int) -> object:
    import redis

    host, port = target.rsplit(":", 1)
    client = _pools.get(target) or _pools.setdefault(
        target, redis.Redis(host=host, port=int(port), socket_timeout=TIMEOUT, max_connections=1000)
    )
    # BLPOP on a list nobody pushes to: the server answers None after DELAY.
    return "ok" if client.blpop([f"fibernet:empty:{i}"], timeout=DELAY) is None else "pushed?"


class psycopg_:  # noqa: N801 - named after the library
    """Connections are opened first (200 server processes start, outside the bar's timing)."""

    @staticmethod
    def connect(target: str, i: int) -> object:
        import psycopg

        return psycopg.connect(target, connect_timeout=int(TIMEOUT))

    @staticmethod
    def request(conn: object, i: int) -> object:
        return conn.execute("select pg_sleep(%s), %s::int", (DELAY, i)).fetchone()[1] == i


class pg8000_:  # noqa: N801
    @staticmethod
    def connect(target: str, i: int) -> object:
        import pg8000.native

        params = dict(item.split("=", 1) for item in target.split())
        return pg8000.native.Connection(
            params["user"],
            host=params["host"],
            port=int(params["port"]),
            database=params["dbname"],
            timeout=TIMEOUT,
        )

    @staticmethod
    def request(conn: object, i: int) -> object:
        return conn.run("select pg_sleep(:d), cast(:i as int)", d=DELAY, i=i)[0][1] == i


LIBRARIES = {
    "http.client": http_client,
    "requests": requests_,
    "urllib3": urllib3_,
    "redis": redis_,
    "psycopg": psycopg_,
    "pg8000": pg8000_,
}


def main() -> None:
    library, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if "--patch" in sys.argv[4:]:
        fibernet.patch_all()
    client = LIBRARIES[library]
    connect = getattr(client, "connect", None)
    request = getattr(client, "request", client)

    def guarded(fn, *args) -> object:
        try:
            return fn(*args)
        except Exception as exc:  # counted, and shown in the test's failure message
            return f"{type(exc).__name__}: {exc}"

    def in_fibers(fn, args: list) -> tuple[float, list]:
        start = time.monotonic()
        fibers = [fibernet.spawn(guarded, fn, *a) for a in args]
        results = [f.join() for f in fibers]
        return time.monotonic() - start, results

    def run_all() -> dict:
        report: dict = {}
        if connect is None:
            sessions = [target] * count
        else:
            report["connect_wall"], sessions = in_fibers(connect, [(target, i) for i in range(count)])
        report["wall"], results = in_fibers(request, list(zip(sessions, range(count), strict=True)))
        report["results"] = collections.Counter(str(r) for r in results)
        for conn in sessions:
            getattr(conn, "close", lambda: None)()
        return report

    print(json.dumps(fibernet.run(run_all)))


if __name__ == "__main__":
    main()
