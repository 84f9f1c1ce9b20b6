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
    access_log: bool = _opt(False, "HTTP: log one line per request", bool)
    admin_port: int | None = _opt(
        None, "serve /healthz, /readyz, /metrics and /fibers on this port", click.IntRange(1, 65535)
    )
    admin_host: str = _opt(
        "127.0.0.1", "the address of the admin endpoint (0.0.0.0 for a kubelet's probes)", str
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
                    help=f.metadata["help"],
                )
            )
        return options
