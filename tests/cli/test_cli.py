"""``fibernet serve`` in-process through click's CliRunner: flags and environment variables
generated from Settings, bad values, APP errors and a port in use (exit 2, a message, no
traceback).  Nothing here is allowed to start serving: ``run_server`` is replaced by a
function that fails the test."""

from __future__ import annotations

import dataclasses
import re
import socket

import click
import pytest
from click.testing import CliRunner
from fibernet_cli import hints
from fibernet_cli import main as cli_main
from fibernet_cli.main import cli, serve
from fibernet_cli.settings import Settings

import fibernet as fn
from fibernet.examples import echo

pytestmark = pytest.mark.timeout(20)

FIELDS = [f for f in dataclasses.fields(Settings) if f.name != "app"]


@pytest.fixture(autouse=True)
def never_serve(monkeypatch):
    def run_server(server, *args, **kwargs):
        server._close_listeners()
        raise AssertionError("the command went on to serve")

    monkeypatch.setattr(cli_main, "run_server", run_server)


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


def assert_usage_error(result, *texts: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    for text in texts:
        assert text in result.output, result.output


# -- flags and environment variables ------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _other_value(f: dataclasses.Field) -> tuple[str, object]:
    """A valid value for the field other than its default: (as typed, as parsed)."""
    kind = f.metadata["type"]
    if kind is bool:
        return ("false" if f.default else "true"), not f.default
    if isinstance(kind, click.Choice):
        choice = next(c for c in kind.choices if c != f.default)
        return choice, choice
    if isinstance(kind, click.IntRange):
        value = (f.default + 1) if f.default is not None else (kind.min or 0) + 7
        return str(value), value
    if isinstance(kind, click.FloatRange):
        value = (f.default or 0.0) + 1.5
        return str(value), value
    return f"value-of-{f.name}", f"value-of-{f.name}"


def test_help_lists_a_flag_for_every_settings_field():
    result = invoke("serve", "--help")
    assert result.exit_code == 0, result.output
    for f in FIELDS:
        assert _flag(f.name) in result.output, f"{_flag(f.name)} missing from --help"
    assert "FIBERNET_" in result.output


def test_help_shows_each_options_environment_variable():
    result = invoke("serve", "--help")
    assert result.exit_code == 0, result.output
    # Each option's entry: from its line to the next option's, whitespace made single spaces.
    entries = [" ".join(e.split()) for e in re.split(r"\n(?=  -)", result.output)]
    for f in FIELDS:
        entry = next(e for e in entries if e.startswith(_flag(f.name) + " "))
        assert f"env var: FIBERNET_{f.name.upper()}" in entry, entry
    assert "FIBERNET_APP" in result.output


HTTP_ONLY = [f for f in FIELDS if f.metadata["help"].startswith("HTTP:")]


def test_some_options_are_http_only():
    assert {"keepalive_timeout", "max_body_size", "access_log"} <= {f.name for f in HTTP_ONLY}


@pytest.mark.parametrize("field", HTTP_ONLY, ids=[f.name for f in HTTP_ONLY])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_http_only_flag_given_to_a_tcp_server_is_refused(field, workers):
    typed, _parsed = _other_value(field)
    args = [_flag(field.name)] if field.metadata["type"] is bool else [_flag(field.name), typed]
    result = invoke("serve", "--port", "0", "--workers", workers, *args)
    assert_usage_error(result, f"{_flag(field.name)} applies to HTTP only", "--protocol http")


def test_an_http_only_flag_is_taken_by_an_http_server(app_dir, monkeypatch):
    name = app_dir.module("PROTOCOL = 'http'\n\ndef app(request):\n    pass\n")
    seen = {}

    def run_server(server, *args, **kwargs):
        seen["server"] = server
        server._close_listeners()

    monkeypatch.setattr(cli_main, "run_server", run_server)
    result = invoke("serve", f"{name}:app", "--app-dir", str(app_dir.path), "--port", "0",
                    "--keepalive-timeout", "7")
    assert result.exit_code == 0, result.output
    assert "server" in seen


def test_an_http_only_variable_in_the_environment_of_a_tcp_server_is_warned_about(monkeypatch, caplog):
    monkeypatch.setattr(cli_main, "run_server", lambda server, *a, **k: server._close_listeners())
    result = invoke("serve", "--port", "0", env={"FIBERNET_KEEPALIVE_TIMEOUT": "7"})
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["FIBERNET_KEEPALIVE_TIMEOUT=7.0 is ignored: it applies to HTTP only, and "
                        "fibernet.examples.echo:handle is served as TCP"], warnings


def _settings(args: list[str]) -> Settings:
    """The Settings that ``fibernet serve ARGS`` builds (as the command does), without serving."""
    with serve.make_context("serve", list(args)) as ctx:
        params = dict(ctx.params)
    app = params.pop("app")
    return Settings(app=app or Settings.app, **params)


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_settings_field_is_a_flag_and_an_environment_variable(field, monkeypatch):
    typed, parsed = _other_value(field)
    is_bool = field.metadata["type"] is bool
    option = next(p for p in serve.params if p.name == field.name)
    assert option.envvar == "FIBERNET_" + field.name.upper()

    assert _settings([]) == Settings()  # neither: the default
    no = "--no-" + field.name.replace("_", "-")
    flag_args = ([no if field.default else _flag(field.name)]) if is_bool else [_flag(field.name), typed]
    assert getattr(_settings(flag_args), field.name) == parsed
    monkeypatch.setenv(option.envvar, typed)
    assert getattr(_settings([]), field.name) == parsed
    # A flag given on the command line beats the environment.
    if is_bool:  # (the flag that gives the default back)
        assert getattr(_settings([_flag(field.name) if field.default else no]), field.name) is field.default
    elif field.default is not None:
        assert getattr(_settings([_flag(field.name), str(field.default)]), field.name) == field.default


@pytest.mark.parametrize(
    "args, env, text",
    [
        (["--port", "-1"], None, "--port"),
        (["--port", "65536"], None, "--port"),
        (["--port", "eighty"], None, "--port"),
        (["--threads", "0"], None, "--threads"),
        (["--log-level", "nope"], None, "--log-level"),
        (["--idle-timeout", "0"], None, "--idle-timeout"),
        (["--protocol", "udp"], None, "--protocol"),
        ([], {"FIBERNET_PORT": "-1"}, "--port"),
        ([], {"FIBERNET_THREADS": "0"}, "--threads"),
        (["--no-such-flag"], None, "--no-such-flag"),
    ],
)
def test_bad_values_exit_2_with_a_message_and_no_traceback(args, env, text):
    assert_usage_error(invoke("serve", *args, env=env), text)


# -- APP errors ------------------------------------------------------------------------------------


def test_an_app_module_that_does_not_exist(app_dir):
    result = invoke("serve", "no_such_module_xyz:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, "no module named 'no_such_module_xyz'")


def test_an_app_module_that_fails_to_import(app_dir):
    name = app_dir.module("raise RuntimeError('the database is down')\n")
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, f"importing '{name}' failed", "RuntimeError", "the database is down")


def test_an_app_module_with_a_syntax_error(app_dir):
    name = app_dir.module("def handle(conn)\n    pass\n")
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, f"importing '{name}' failed", "SyntaxError")


def test_an_app_module_whose_dependency_is_missing_names_the_dependency(app_dir):
    name = app_dir.module("import no_such_dependency_xyz\n\ndef handle(conn):\n    pass\n")
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, f"importing '{name}' failed", "no_such_dependency_xyz")


def test_an_app_attribute_that_is_missing(app_dir):
    name = app_dir.module("def handle(conn):\n    pass\n")
    result = invoke("serve", f"{name}:handler", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, f"module '{name}' has no attribute 'handler'")


def test_an_app_attribute_that_is_not_callable(app_dir):
    name = app_dir.module("handle = 42\n")
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, "not a callable handler")


@pytest.mark.parametrize("spec", ["just_a_module", ":handle", "module:"])
def test_an_app_that_is_not_module_colon_attribute(spec):
    assert_usage_error(invoke("serve", spec, "--port", "0"), "is not module:attribute")


def test_a_factory_that_fails(app_dir):
    name = app_dir.module("def make():\n    raise ValueError('no config')\n")
    result = invoke("serve", f"{name}:make", "--factory", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, "factory", "ValueError", "no config")


def test_a_module_that_declares_an_unknown_protocol(app_dir):
    name = app_dir.module("PROTOCOL = 'gopher'\n\ndef handle(conn):\n    pass\n")
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0")
    assert_usage_error(result, "gopher")


def test_a_good_app_reaches_the_server_with_its_settings(app_dir, monkeypatch):
    name = app_dir.module("def handle(conn):\n    conn.sendall(b'hi')\n")
    seen = {}

    def run_server(server, *args, **kwargs):
        seen["server"] = server
        server._close_listeners()

    monkeypatch.setattr(cli_main, "run_server", run_server)
    result = invoke("serve", f"{name}:handle", "--app-dir", str(app_dir.path), "--port", "0",
                    "--threads", "3", "--max-connections", "7", "--idle-timeout", "9.5")
    assert result.exit_code == 0, result.output
    server = seen["server"]
    assert server.threads == 3
    assert server.limits.max_connections == 7
    assert server.limits.idle_timeout == 9.5
    assert server.handler.__module__ == name


# -- the startup line's URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, address, settings, url",
    [
        (socket.AF_INET, ("127.0.0.1", 0), {}, "tcp://127.0.0.1:{port}"),
        (socket.AF_INET, ("127.0.0.1", 0), {"protocol": "http"}, "http://127.0.0.1:{port}"),
        (socket.AF_INET, ("127.0.0.1", 0), {"protocol": "http", "ssl_certfile": "c.pem"},
         "https://127.0.0.1:{port}"),
        (socket.AF_INET, ("127.0.0.1", 0), {"ssl_certfile": "c.pem"}, "tls://127.0.0.1:{port}"),
        (socket.AF_INET6, ("::1", 0), {"protocol": "http"}, "http://[::1]:{port}"),
        (socket.AF_UNIX, "\0fibernet-test-abstract", {}, "unix:@fibernet-test-abstract"),
    ],
    ids=["tcp", "http", "https", "tls", "ipv6", "abstract-unix"],
)
def test_serving_urls(family, address, settings, url):
    with socket.socket(family, socket.SOCK_STREAM) as one, socket.socket(family, socket.SOCK_STREAM) as two:
        try:
            one.bind(address)
        except OSError as exc:  # no IPv6 on this machine
            pytest.skip(f"cannot bind {address}: {exc}")
        port = one.getsockname()[1] if family != socket.AF_UNIX else None
        if family == socket.AF_UNIX:
            two.bind("\0fibernet-test-abstract-2")
            expected = [url, "unix:@fibernet-test-abstract-2"]
            socks = [one, two]
        else:
            expected = [url.format(port=port)]
            socks = [one, one]  # the same address twice (listeners of several threads): once
        assert cli_main.serving_urls(Settings(**settings), socks) == expected


# -- a port in use ---------------------------------------------------------------------------------


def test_a_port_in_use_exits_2():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = invoke("serve", "--port", str(port))
    assert_usage_error(result, f"127.0.0.1:{port} is already in use")


def test_a_port_another_fibernet_server_listens_on_is_in_use():
    """fibernet's listeners use SO_REUSEPORT; that must not let a second one share the port."""
    with fn.Server(echo.handle, threads=2) as other:
        port = other.address[1]
        result = invoke("serve", "--port", str(port), "--threads", "2")
        other.stop(0)
    assert_usage_error(result, f"127.0.0.1:{port} is already in use")


# -- hints: an HTTP app served as TCP --------------------------------------------------------------


@pytest.mark.parametrize("data, http", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"POST /submit?a=1 HTTP/1.0\n", True),
    (b"GET / HTTP/1.1", False),  # no end of line yet: not enough to say
    (b"hello there\n", False),
    (b"", False),
])
def test_looks_like_http(data, http):
    assert hints.looks_like_http(data) is http


def test_startup_hint_reads_the_first_parameters_name():
    def app(request):
        pass

    def handle(conn):
        pass

    assert hints.startup_hint(app) == "its parameter is named 'request'"
    assert hints.startup_hint(lambda req: None) == "its parameter is named 'req'"
    assert hints.startup_hint(handle) is None
    assert hints.startup_hint(print) is None  # a builtin: no opinion
