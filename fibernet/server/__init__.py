"""Servers: TCP (a fiber per connection on every scheduler thread) and its foreground runner."""

from fibernet.server.serving import run_server, serve
from fibernet.server.tcp import Limits, Server

__all__ = ["Limits", "Server", "run_server", "serve"]
