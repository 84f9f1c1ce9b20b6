"""The HTTP limits of ``fibernet serve``: each timeout is a flag and a ``FIBERNET_*`` variable,
and the value given reaches the server's HTTP layer (built as the command builds it)."""

from __future__ import annotations

import dataclasses

import pytest
from fibernet_cli.main import build_server, serve
from fibernet_cli.settings import Settings

from fibernet.examples import hello
from fibernet.server import HttpLimits

pytestmark = pytest.mark.timeout(20)

TIMEOUTS = [f.name for f in dataclasses.fields(HttpLimits) if f.name.endswith("_timeout")]


def _settings(args: list[str]) -> Settings:
    with serve.make_context("serve", ["fibernet.examples.hello:app", *args]) as ctx:
        return Settings(**ctx.params)


def _limits(settings: Settings) -> HttpLimits:
    server = build_server(hello.app, dataclasses.replace(settings, protocol="http"), None)
    return server.handler.config.limits


def test_every_http_limit_is_a_setting_of_fibernet_serve():
    # (so a limit added to HttpLimits cannot miss its flag and variable)
    settings = {f.name for f in dataclasses.fields(Settings)}
    assert [f.name for f in dataclasses.fields(HttpLimits) if f.name not in settings] == []


@pytest.mark.parametrize(("flag", "value", "name"), [
    ("--park-after", "0", "park_after"),
    ("--park-over", "1000", "park_over"),
    ("--max-drain", "4096", "max_drain"),
    ("--max-chunk-overhead", "300", "max_chunk_overhead"),
])
def test_the_parking_and_body_limits_reach_the_server(flag, value, name):
    assert getattr(_limits(_settings([flag, value])), name) == float(value)


def test_the_send_and_body_timeouts_are_among_the_http_timeouts():
    assert {"send_timeout", "body_timeout", "head_timeout", "keepalive_timeout"} <= set(TIMEOUTS)


@pytest.mark.parametrize("name", TIMEOUTS)
def test_every_http_timeout_is_a_flag_and_a_variable_that_reach_the_server(name, monkeypatch):
    flag = "--" + name.replace("_", "-")
    default = getattr(HttpLimits(), name)
    assert getattr(_limits(_settings([])), name) == default
    assert getattr(_limits(_settings([flag, "7.5"])), name) == 7.5
    monkeypatch.setenv("FIBERNET_" + name.upper(), "2.25")
    assert getattr(_limits(_settings([])), name) == 2.25
    assert getattr(_limits(_settings([flag, "4"])), name) == 4.0  # the flag beats the variable
