"""``fibernet``: a thin click app.  ``serve`` builds one :class:`Settings` and makes one call."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import sys

import click
from fibernet_cli.loader import load_app
from fibernet_cli.settings import Settings

from fibernet.server import HttpConfig, HttpLimits, Limits, Server, http_handler, run_server
from fibernet.server.websocket import WebSocketLimits
from fibernet.server.workers import Arbiter

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fibernet")
def cli() -> None:
    """fibernet: fibers, channels and servers for Python."""


def _serve(app: str | None, **values: object) -> None:
    source = click.get_current_context().get_parameter_source("protocol")
    settings = Settings(app=app or Settings.app, **values)  # type: ignore[arg-type]
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    if settings.workers == 1:
        handler, settings = _load(settings, source)
        server = build_server(handler, settings, listeners(settings))
        _bind(server, settings)
        try:
            admin = _admin_socket(settings)
        except click.ClickException:
            server._close_listeners()
            raise
        run_server(server, admin=admin)
        return
    # Several workers: the supervisor never imports the app (so SIGHUP loads new code);
    # a probe process imports it once so that a broken module fails here, with its message.
    _probe(settings, source)
    sockets = listeners(settings) or [_bind_shared(settings)]
    admin = _admin_socket(settings)
    arbiter = Arbiter(
        sockets,
        settings.workers,
        lambda socks, ready, report: _worker(settings, source, socks, ready, report),
        settings.graceful_timeout,
        admin,
    )
    sys.exit(arbiter.run())


def _admin_socket(settings: Settings) -> object:
    """The admin endpoint's listening socket, bound here so that an address in use is a
    usage error (exit 2) like the server's own, or None without --admin-port."""
    if settings.admin_port is None:
        return None
    try:
        return _bind_shared(
            dataclasses.replace(settings, host=settings.admin_host, port=settings.admin_port, uds=None)
        )
    except click.UsageError as exc:
        raise click.UsageError(f"the admin endpoint (--admin-port): {exc.message}") from None


def _load(settings: Settings, source: object) -> tuple[object, Settings]:
    handler, declared = load_app(settings.app, settings.app_dir, settings.factory)
    if declared is not None and source is click.core.ParameterSource.DEFAULT:
        if declared not in ("tcp", "http"):
            raise click.BadParameter(
                f"{settings.app}'s module declares PROTOCOL = {declared!r}", param_hint="APP"
            )
        settings = dataclasses.replace(settings, protocol=declared)
    return _interface(handler, settings, source)


def _interface(handler: object, settings: Settings, source: object) -> tuple[object, Settings]:
    """A WSGI app (--interface wsgi, or auto and it takes environ and start_response) is
    served over HTTP through the WSGI adapter; an ASGI app is refused with the reason."""
    from fibernet.server.wsgi import WSGIApp, detect_interface, refuse_asgi

    interface = settings.interface
    try:
        refuse_asgi(handler)  # type: ignore[arg-type]
        if interface == "auto":
            interface = detect_interface(handler)  # type: ignore[arg-type]
    except TypeError as exc:
        raise click.BadParameter(f"{settings.app}: {exc}", param_hint="APP") from None
    if interface != "wsgi":
        return handler, settings
    if settings.protocol != "http" and source is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter(f"a WSGI app speaks HTTP, not {settings.protocol}", param_hint="--protocol")
    wsgi = WSGIApp(handler, multiprocess=settings.workers > 1)  # type: ignore[arg-type]
    return wsgi, dataclasses.replace(settings, protocol="http")


def _probe(settings: Settings, source: object) -> None:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            _load(settings, source)
        except click.ClickException as exc:
            # The bare message: it is raised again below as a BadParameter of APP, which
            # adds "Invalid value for APP: " itself.
            os.write(w, exc.message.encode())
            code = 2
        except BaseException as exc:  # noqa: BLE001
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
            code = 2
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise click.BadParameter(message or "the app failed to load", param_hint="APP")


def _worker(settings: Settings, source: object, sockets: list, ready: object, report: object) -> None:
    try:
        handler, settings = _load(settings, source)
    except click.ClickException as exc:  # new code after SIGHUP that does not load: one line, no traceback
        logging.getLogger("fibernet.workers").error(
            "worker %d cannot load %s: %s", os.getpid(), settings.app, exc.message
        )
        sys.exit(1)
    server = build_server(handler, settings, sockets)
    run_server(
        server,
        on_ready=ready,
        parent=int(os.environ["FIBERNET_SUPERVISOR_PID"]),  # type: ignore[arg-type]
        report=report,
    )  # type: ignore[arg-type]


def build_server(handler: object, settings: Settings, sockets: list | None) -> Server:
    """The one library object: a server for ``handler`` as ``settings`` say."""
    limits = Limits(
        max_connections=settings.max_connections,
        idle_timeout=settings.idle_timeout if settings.protocol == "tcp" else None,
        backlog=settings.backlog,
        graceful_timeout=settings.graceful_timeout,
    )
    if settings.protocol == "http":
        # Every HTTP limit that is a setting (a flag and a variable) is taken from it.
        names = [f.name for f in dataclasses.fields(HttpLimits) if hasattr(settings, f.name)]
        http_limits = HttpLimits(**{name: getattr(settings, name) for name in names})
        websocket = WebSocketLimits(
            max_size=settings.ws_max_size,
            max_queue=settings.ws_max_queue,
            ping_interval=settings.ws_ping_interval or None,
            ping_timeout=settings.ws_ping_timeout,
            close_timeout=settings.ws_close_timeout,
            send_timeout=http_limits.send_timeout,
            per_message_deflate=settings.ws_per_message_deflate,
        )
        handler = http_handler(
            handler, HttpConfig(http_limits, settings.access_log, settings.limit_concurrency, websocket)
        )  # type: ignore[arg-type]
    return Server(
        handler,
        settings.host,
        settings.port,
        threads=settings.threads,
        limits=limits,  # type: ignore[arg-type]
        name=settings.app,
        sockets=sockets,
    )


def _bind(server: Server, settings: Settings) -> None:
    try:
        server.bind()
    except OSError as exc:
        raise _bind_error(exc, settings) from None


def _bind_shared(settings: Settings) -> object:
    from fibernet.net.sockets import listen

    try:
        return listen(settings.host, settings.port, settings.backlog).sock
    except OSError as exc:
        raise _bind_error(exc, settings) from None


def _bind_error(exc: OSError, settings: Settings) -> click.UsageError:
    where = settings.uds or f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return click.UsageError(f"{where} is already in use")
    return click.UsageError(f"cannot listen on {where}: {exc.strerror}")


def listeners(settings: Settings) -> list | None:
    """The sockets to serve on when not binding host:port: --uds, --fd, or systemd's."""
    from fibernet.server.binding import inherited_socket, systemd_sockets, unix_listener

    if settings.uds is not None and settings.fd is not None:
        raise click.UsageError("--uds and --fd exclude each other")
    if settings.fd is not None:
        try:
            return [inherited_socket(settings.fd)]
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--fd") from None
    if settings.uds is not None:
        try:
            return [unix_listener(settings.uds, settings.backlog)]
        except OSError as exc:
            raise click.UsageError(f"cannot listen on {settings.uds}: {exc.strerror}") from None
    return systemd_sockets() or None


serve = click.Command(
    "serve",
    callback=_serve,
    params=[
        click.Argument(["app"], required=False, envvar=Settings.env_name("app")),
        *Settings.click_options(),
    ],
    help="Serve APP (module:attribute, a handler run for each connection); with no APP, the "
    "built-in echo handler.  Every option can also be set as FIBERNET_<OPTION>.",
)
cli.add_command(serve)


@cli.command()
@click.option(
    "--admin",
    default="127.0.0.1:9100",
    show_default=True,
    envvar="FIBERNET_ADMIN",
    callback=lambda ctx, param, value: _host_port(value),
    help="host:port of the server's admin endpoint (fibernet serve --admin-port)",
)
@click.option("--json", "as_json", is_flag=True, help="print the raw snapshots as JSON")
def inspect(admin: str, as_json: bool) -> None:
    """Show a running server's schedulers and fibers: state, what each waits on, how long."""
    import http.client
    import json
    import urllib.error
    import urllib.request

    from fibernet.server.admin import render_fibers

    url = f"http://{admin}/fibers"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            snapshots = json.load(response)
    except http.client.HTTPException as exc:
        raise click.ClickException(f"cannot read {url}: not an HTTP answer ({exc!r:.80})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {url}: {getattr(exc, 'reason', exc)}") from None
    click.echo(json.dumps(snapshots, indent=2) if as_json else render_fibers(snapshots), nl=False)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not host:port (e.g. 127.0.0.1:9100)")
    return value


def _loadtest_dir() -> str:
    import pathlib

    import fibernet

    env = os.environ.get("FIBERNET_LOADTEST_DIR")
    if env:
        return env
    return str(pathlib.Path(fibernet.__file__).resolve().parents[1] / "loadtest")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def loadtest(script: str | None, args: tuple[str, ...]) -> None:
    """Run a script of loadtest/ (with no SCRIPT, list them), passing ARGS through."""
    import subprocess

    folder = _loadtest_dir()
    try:
        scripts = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
    except OSError:
        raise click.ClickException(f"no loadtest folder at {folder} (set FIBERNET_LOADTEST_DIR)") from None
    if script is None:
        click.echo("\n".join(scripts))
        return
    if script not in scripts:
        raise click.BadParameter(f"{script!r} is not one of {', '.join(scripts)}", param_hint="SCRIPT")
    sys.exit(subprocess.call([sys.executable, os.path.join(folder, script + ".py"), *args]))


if __name__ == "__main__":  # pragma: no cover
    cli()
