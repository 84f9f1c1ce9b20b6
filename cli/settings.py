"""The one settings object of ``fibernet serve``: a frozen dataclass.

Each field is one command-line flag (``--max-connections``) and one environment variable
(``FIBERNET_MAX_CONNECTIONS``); the command builds a ``Settings`` and makes one library call,
as uvicorn's ``Config`` does.  The flags are generated from the fields, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import click

ENV_PREFIX = "FIBERNET_"


def _opt(default: Any, help: str, type: Any = None, flag: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "type": type, "flag": flag})


@dataclass(frozen=True)
class Settings:
    app: str = _opt("fibernet.examples.echo:handle", "the handler, as module:attribute")
    factory: bool = _opt(False, "APP is a factory: call it with no arguments to get the handler", bool)
    protocol: str = _opt(
        "tcp", "the protocol the handler speaks (a module may set PROTOCOL)", click.Choice(["tcp", "http"])
    )
    interface: str = _opt(
        "auto",
        "what APP is: a fibernet handler, or a WSGI app (environ, start_response); auto tells them apart",
        click.Choice(["auto", "fibernet", "wsgi"]),
    )
    app_dir: str = _opt(".", "look for the APP module in this directory first", str)
    host: str = _opt("127.0.0.1", "the address to bind", str)
    port: int = _opt(8000, "the TCP port to bind (0: any free port)", click.IntRange(0, 65535))
    uds: str | None = _opt(None, "listen on this Unix socket path instead of host and port", str)
    fd: int | None = _opt(
        None, "listen on this inherited descriptor (a bound, listening socket)", click.IntRange(0)
    )
    backlog: int = _opt(1024, "the listen backlog", click.IntRange(1))
    threads: int = _opt(1, "scheduler threads in each process", click.IntRange(1, 256))
    workers: int = _opt(
        1, "worker processes (pre-forked, sharing the listening sockets)", click.IntRange(1, 256)
    )
    max_connections: int = _opt(
        10_000, "connections open at once; accepting pauses beyond", click.IntRange(1)
    )
    idle_timeout: float = _opt(
        300.0,
        "close a connection that moved no byte for this long (seconds)",
        click.FloatRange(0, min_open=True),
    )
    graceful_timeout: float = _opt(
        30.0, "on SIGTERM, let connections finish this long (seconds)", click.FloatRange(0)
    )
    limit_concurrency: int | None = _opt(
        None, "HTTP: connections served at once; beyond, answer 503 and close", click.IntRange(1)
    )
    keepalive_timeout: float = _opt(
        5.0,
        "HTTP: close a keep-alive connection idle this long (seconds)",
        click.FloatRange(0, min_open=True),
    )
    head_timeout: float = _opt(
        10.0,
        "HTTP: a request head must arrive within this (seconds; 408)",
        click.FloatRange(0, min_open=True),
    )
    body_timeout: float = _opt(
        30.0,
        "HTTP: a request body that moves no byte for this long is refused (seconds; 408)",
        click.FloatRange(0, min_open=True),
    )
    send_timeout: float = _opt(
        30.0,
        "HTTP: close a connection whose client reads nothing of a response for this long (seconds)",
        click.FloatRange(0, min_open=True),
    )
    max_body_size: int = _opt(1024 * 1024, "HTTP: the largest request body (bytes; 413)", click.IntRange(1))
    max_head_size: int = _opt(16 * 1024, "HTTP: the largest request head (bytes; 431)", click.IntRange(256))
    max_header_count: int = _opt(100, "HTTP: the most header fields in a request (431)", click.IntRange(1))
    max_request_line: int = _opt(8190, "HTTP: the longest request target (bytes; 414)", click.IntRange(16))
    max_field_size: int = _opt(
        8192, "HTTP: the largest header field, name and value (bytes; 431)", click.IntRange(64)
    )
    max_chunk_overhead: int = _opt(
        1024,
        "HTTP: the longest chunk-size line with extensions, per chunk, and of the trailers (bytes; 400)",
        click.IntRange(1),
    )
    max_drain: int = _opt(
        64 * 1024,
        "HTTP: an unread request body up to this is read and dropped to keep the connection; "
        "a larger one closes it (bytes)",
        click.IntRange(1),
    )
    park_after: float = _opt(
        1.0,
        "HTTP: an idle keep-alive connection keeps its fiber this long, then parks with none "
        "(seconds; 0: park at once)",
        click.FloatRange(0),
    )
    park_over: int = _opt(
        128,
        "HTTP: park idle connections at once while a scheduler runs more fibers than this",
        click.IntRange(0),
    )
    min_body_rate: float = _opt(
        240.0,
        "HTTP: the least average request body rate after --body-rate-grace (bytes/s; 408; 0: none)",
        click.FloatRange(0),
    )
    body_rate_grace: float = _opt(
        5.0,
        "HTTP: the time a request body is given before --min-body-rate applies (seconds)",
        click.FloatRange(0, min_open=True),
    )
    ws_max_size: int = _opt(
        1024 * 1024, "WebSocket: the largest message (bytes; closed with 1009 beyond)", click.IntRange(1)
    )
    ws_max_queue: int = _opt(
        16, "WebSocket: messages waiting for the app before reading pauses", click.IntRange(1)
    )
    ws_ping_interval: float = _opt(
        20.0, "WebSocket: ping a peer silent this long (seconds; 0: never)", click.FloatRange(0)
    )
    ws_ping_timeout: float = _opt(
        20.0,
        "WebSocket: drop a pinged peer silent this long (seconds; 1011)",
        click.FloatRange(0, min_open=True),
    )
    ws_close_timeout: float = _opt(
        5.0,
        "WebSocket: wait this long for the peer's close reply (seconds)",
        click.FloatRange(0, min_open=True),
    )
    ws_per_message_deflate: bool = _opt(True, "WebSocket: accept permessage-deflate compression", bool)
    access_log: bool = _opt(False, "HTTP: log one line per request", bool)
    admin_port: int | None = _opt(
        None, "serve /healthz, /readyz, /metrics and /fibers on this port", click.IntRange(1, 65535)
    )
    admin_host: str = _opt(
        "127.0.0.1", "the address of the admin endpoint (0.0.0.0 for a kubelet's probes)", str
    )
    block_warning: float = _opt(
        0.1,
        "log a scheduler held by one fiber for longer than this, with its stack (seconds; 0: off)",
        click.FloatRange(0),
    )
    worker_timeout: float | None = _opt(
        None,
        "with --workers: kill and replace a worker whose schedulers are all blocked this long (seconds)",
        click.FloatRange(0, min_open=True),
    )
    patch: bool = _opt(
        False,
        "make the standard library's blocking calls (socket, ssl, select, time.sleep, locks) "
        "suspend only the calling fiber: fibernet.patch_all(), before the app is imported",
        bool,
    )
    # -- TLS and the proxy in front (fibernet/net/tls.py, fibernet/server/proxy.py) --
    ssl_certfile: str | None = _opt(None, "serve TLS with this certificate (PEM, chain after it)", str)
    ssl_keyfile: str | None = _opt(None, "the certificate's private key (PEM; default: in the certfile)", str)
    ssl_keyfile_password: str | None = _opt(None, "the password of an encrypted private key", str)
    ssl_ca_certs: str | None = _opt(None, "the CA certificates client certificates are checked against", str)
    ssl_cert_reqs: int = _opt(
        0, "client certificates: 0 not asked, 1 optional, 2 required (ssl.CERT_*)", click.IntRange(0, 2)
    )
    ssl_ciphers: str | None = _opt(None, "the OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)", str)
    handshake_timeout: float = _opt(
        10.0,
        "the PROXY header and the TLS handshake must be done within this (seconds)",
        click.FloatRange(0, min_open=True),
    )
    proxy_protocol: bool = _opt(
        False, "every connection starts with a PROXY protocol header (v1 or v2)", bool
    )
    proxy_headers: bool = _opt(
        True,
        "HTTP: take the client and scheme from X-Forwarded-For/-Proto or Forwarded of trusted peers",
        bool,
    )
    forwarded_allow_ips: str = _opt(
        "127.0.0.1", "the peers trusted with proxy headers: addresses, networks, or *", str
    )
    bus: str | None = _opt(
        None, "join workers and instances over this broker (redis://host:port/db): see fibernet.bus", str
    )
    log_level: str = _opt(
        "info",
        "the log level",
        click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
    )

    @staticmethod
    def env_name(name: str) -> str:
        return ENV_PREFIX + name.upper()

    @classmethod
    def click_options(cls) -> list[click.Option]:
        """One click option per field except ``app`` (the positional argument)."""
        options = []
        for f in fields(cls):
            if f.name == "app":
                continue
            flag = "--" + f.name.replace("_", "-")
            kind = f.metadata["type"]
            decls = [flag] if kind is not bool else [f"{flag}/--no-{flag[2:]}"]
            options.append(
                click.Option(
                    [*decls, f.name],
                    type=None if kind is bool else kind,
                    default=f.default,
                    show_default=True,
                    envvar=cls.env_name(f.name),
                    show_envvar=True,
                    help=f.metadata["help"],
                )
            )
        return options
