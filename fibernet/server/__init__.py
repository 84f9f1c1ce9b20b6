"""Servers: TCP (a fiber per connection on every scheduler thread), HTTP/1.1 on it, and the
foreground runner with signals."""

from fibernet.server.http import HttpConfig, http_handler, http_server
from fibernet.server.http_protocol import HttpLimits
from fibernet.server.serving import run_server, serve, serve_http
from fibernet.server.tcp import Limits, Parked, Server

__all__ = [
    "HttpConfig",
    "HttpLimits",
    "Limits",
    "Parked",
    "Server",
    "http_handler",
    "http_server",
    "run_server",
    "serve",
    "serve_http",
]
