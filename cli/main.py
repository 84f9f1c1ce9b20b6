"""``fibernet``: a thin click app.  ``serve`` builds one :class:`Settings` and makes one call."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import sys

import click
from fibernet_cli import hints
from fibernet_cli.loader import load_app
from fibernet_cli.settings import Settings

from fibernet.net.tls import TLSConfig
from fibernet.server import HttpConfig, HttpLimits, Limits, Server, http_handler, run_server
from fibernet.server.proxy import ForwardedPolicy
from fibernet.server.websocket import WebSocketLimits
from fibernet.server.workers import Arbiter

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
log = logging.getLogger("fibernet.cli")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fibernet")
def cli() -> None:
    """fibernet: fibers, channels and servers for Python."""


def _serve(app: str | None, **values: object) -> None:
    source = click.get_current_context().get_parameter_source("protocol")
    settings = Settings(app=app or Settings.app, **values)  # type: ignore[arg-type]
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    _configure_bus(settings)
    tls = tls_config(settings)
    if tls is not None:
        _check_tls(tls)  # (here, so that a bad file is a usage error before any worker starts)
    if settings.workers == 1:
        handler, settings = _load(settings, source, startup=True)
        server = build_server(handler, settings, listeners(settings))
        _bind(server, settings)
        try:
            admin = _admin_socket(settings)
        except click.ClickException:
            server._close_listeners()
            raise
        run_server(
            server,
            admin=admin,
            on_ready=lambda: _announce(settings, server._listeners),
            block_warning=settings.block_warning,
        )
        return
    # Several workers: the supervisor never imports the app (so SIGHUP loads new code);
    # a probe process imports it once so that a broken module fails here, with its message.
    settings = _probe(settings, source)
    sockets = listeners(settings) or [_bind_shared(settings)]
    admin = _admin_socket(settings)
    _announce(settings, sockets)
    arbiter = Arbiter(
        sockets,
        settings.workers,
        lambda socks, ready, report: _worker(settings, source, socks, ready, report),
        settings.graceful_timeout,
        admin,
    )
    sys.exit(arbiter.run())


def _configure_bus(settings: Settings) -> None:
    """--bus: the default bus of the app (and of every worker), and a readiness check."""
    if settings.bus is None:
        return
    import fibernet.bus
    from fibernet.server.admin import add_readiness_check

    try:
        fibernet.bus.configure(settings.bus)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bus") from None
    add_readiness_check(fibernet.bus.unready)


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


def _load(settings: Settings, source: object, startup: bool = False) -> tuple[object, Settings]:
    """The handler and the settings for it (the module's PROTOCOL applied).  ``startup``: this
    is the process that says, once, what looks wrong in how the app is served."""
    if settings.patch:  # before the app's modules import socket, threading, ...
        from fibernet.patch import patch_all

        logging.getLogger("fibernet.patch").info("patched for fibers: %s", ", ".join(patch_all()))
    handler, declared = load_app(settings.app, settings.app_dir, settings.factory)
    if declared is not None and source is click.core.ParameterSource.DEFAULT:
        if declared not in ("tcp", "http"):
            raise click.BadParameter(
                f"{settings.app}'s module declares PROTOCOL = {declared!r}", param_hint="APP"
            )
        settings = dataclasses.replace(settings, protocol=declared)
    handler, settings = _interface(handler, settings, source)
    if settings.protocol == "tcp":
        if startup:
            _check_http_only_flags(settings)
            why = hints.startup_hint(handler)  # type: ignore[arg-type]
            if why is not None and source is click.core.ParameterSource.DEFAULT:
                log.warning("%s", hints.advice(settings.app, why))
        handler = hints.guard_tcp_handler(handler, settings.app)  # type: ignore[arg-type]
    return handler, settings


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


def _check_http_only_flags(settings: Settings) -> None:
    """An HTTP-only option (its help starts with "HTTP:") given to a TCP server: refused on the
    command line; from the environment (maybe shared by several services) a warning."""
    ctx = click.get_current_context()
    for f in dataclasses.fields(Settings):
        if not f.metadata.get("help", "").startswith("HTTP:"):
            continue
        where = ctx.get_parameter_source(f.name)
        flag = "--" + f.name.replace("_", "-")
        if where is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{flag} applies to HTTP only, and {settings.app} is served as TCP "
                                   "(add --protocol http, or set PROTOCOL = 'http' in its module)")
        if where is click.core.ParameterSource.ENVIRONMENT:
            log.warning("%s=%s is ignored: it applies to HTTP only, and %s is served as TCP",
                        Settings.env_name(f.name), getattr(settings, f.name), settings.app)


def _probe(settings: Settings, source: object) -> Settings:
    """Load the app in a child process (so that the supervisor never imports it) and return
    the settings as the app's module makes them (its PROTOCOL)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            _, loaded = _load(settings, source, startup=True)
            os.write(w, loaded.protocol.encode())
        except click.BadParameter as exc:
            # The bare message: it is raised again below as a BadParameter of APP, which
            # adds "Invalid value for APP: " itself.
            os.write(w, exc.message.encode())
            code = 2
        except click.ClickException as exc:
            os.write(w, exc.message.encode())
            code = 3
        except BaseException as exc:  # noqa: BLE001
            os.write(w, f"{type(exc).__name__}: {exc}".encode())
            code = 2
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        message = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 3:
        raise click.UsageError(message)
    if code != 0:
        raise click.BadParameter(message or "the app failed to load", param_hint="APP")
    return dataclasses.replace(settings, protocol=message)


def listen_url(scheme: str, address: object) -> str:
    """Where a listening socket is, as a user types it: ``http://127.0.0.1:8000``,
    ``tcp://[::1]:9000``, ``unix:/run/app.sock``."""
    if isinstance(address, tuple):
        host, port = address[:2]
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    if isinstance(address, bytes):  # an abstract Unix socket
        address = "@" + address.lstrip(b"\0").decode(errors="replace")
    return f"unix:{address}"


def serving_urls(settings: Settings, sockets: list) -> list[str]:
    """The URLs of ``sockets`` (once each), with https:// or tls:// when serving TLS."""
    scheme = settings.protocol
    if settings.ssl_certfile is not None:
        scheme = {"http": "https", "tcp": "tls"}[scheme]
    return list(dict.fromkeys(listen_url(scheme, s.getsockname()) for s in sockets))


def _announce(settings: Settings, sockets: list) -> None:
    """The startup line: where the app listens, as URLs, and how to stop it."""
    urls = ", ".join(serving_urls(settings, sockets))
    workers = f" in {settings.workers} worker processes" if settings.workers > 1 else ""
    log.info("%s listening at %s%s (Ctrl-C or SIGTERM stops it)", settings.app, urls, workers)


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
        block_warning=settings.block_warning,
        worker_timeout=settings.worker_timeout,
    )  # type: ignore[arg-type]


def build_server(handler: object, settings: Settings, sockets: list | None) -> Server:
    """The one library object: a server for ``handler`` as ``settings`` say."""
    limits = Limits(
        max_connections=settings.max_connections,
        idle_timeout=settings.idle_timeout if settings.protocol == "tcp" else None,
        backlog=settings.backlog,
        graceful_timeout=settings.graceful_timeout,
        handshake_timeout=settings.handshake_timeout,
    )
    if settings.protocol == "http":
        # Every HTTP limit that is a setting (a flag and a variable) is taken from it.
        names = [f.name for f in dataclasses.fields(HttpLimits) if hasattr(settings, f.name)]
        http_limits = HttpLimits(**{name: getattr(settings, name) for name in names})
        forwarded = ForwardedPolicy(settings.forwarded_allow_ips) if settings.proxy_headers else None
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
            handler,
            HttpConfig(http_limits, settings.access_log, settings.limit_concurrency, forwarded, websocket),
        )  # type: ignore[arg-type]
    return Server(
        handler,
        settings.host,
        settings.port,
        threads=settings.threads,
        limits=limits,  # type: ignore[arg-type]
        name=settings.app,
        sockets=sockets,
        ssl=tls_config(settings),
        proxy_protocol=settings.proxy_protocol,
    )


def tls_config(settings: Settings) -> TLSConfig | None:
    """What the --ssl-* options say (None: no TLS); the files are read by the server, in
    each worker, and again on SIGHUP."""
    if settings.ssl_certfile is None:
        if settings.ssl_keyfile is not None:
            raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
        return None
    return TLSConfig(
        settings.ssl_certfile,
        settings.ssl_keyfile,
        settings.ssl_keyfile_password,
        settings.ssl_ca_certs,
        settings.ssl_cert_reqs,
        settings.ssl_ciphers,
        ("http/1.1",) if settings.protocol == "http" else (),
    )


def _check_tls(tls: TLSConfig) -> None:
    try:
        tls.context()
    except (OSError, ValueError) as exc:  # a missing file, a bad PEM, a wrong password, a bad cipher list
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        files = tls.certfile + (f" (key {tls.keyfile})" if tls.keyfile else "")
        raise click.UsageError(f"TLS: cannot load the certificate {files}: {reason}") from None


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
    help="Serve APP (module:attribute, a handler run for each connection, or for each request "
    "with --protocol http); with no APP, the built-in echo handler.  APP and every option can "
    "also be set in the environment (FIBERNET_APP, and the variable shown beside each option).",
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
    """The folder of the loadtest scripts: $FIBERNET_LOADTEST_DIR, else the installed
    ``fibernet_loadtest`` package (``loadtest/`` itself in an editable install)."""
    import importlib.util

    env = os.environ.get("FIBERNET_LOADTEST_DIR")
    if env:
        return env
    spec = importlib.util.find_spec("fibernet_loadtest")
    if spec is None or not spec.submodule_search_locations:
        raise click.ClickException("fibernet_loadtest is not installed (set FIBERNET_LOADTEST_DIR)")
    return list(spec.submodule_search_locations)[0]


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                      "allow_interspersed_args": False},
    add_help_option=False,
)
@click.option("--peers-python", metavar="PATH", help="Run SCRIPT on this interpreter (the peers').")
@click.option("--make-env", metavar="DIR",
              help="Run SCRIPT in the peers' venv DIR (made, and the peers pip-installed, if needed).")
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def loadtest(ctx: click.Context, peers_python: str | None, make_env: str | None, script: str | None,
             args: tuple[str, ...]) -> None:
    """Run SCRIPT of fibernet's load generator and benchmarks with ARGS (SCRIPT --help: its
    own options); with no SCRIPT, list them.  With --make-env or --peers-python the script runs
    on the peers' interpreter, so that the peers it measures come from there.  The load
    generator needs the loadtest extra: pip install 'fibernet[loadtest]'."""
    import subprocess

    folder = _loadtest_dir()
    try:
        scripts = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and not f.startswith("_"))
    except OSError:
        raise click.ClickException(f"no loadtest folder at {folder} (set FIBERNET_LOADTEST_DIR)") from None
    if script in (None, "-h", "--help"):
        if script is not None:  # this command's own help, then the scripts
            click.echo(ctx.get_help() + "\n\nScripts:")
        click.echo("\n".join(scripts))
        return
    if script not in scripts:
        raise click.BadParameter(f"{script!r} is not one of {', '.join(scripts)}", param_hint="SCRIPT")
    python, env = sys.executable, None
    if peers_python or make_env:
        sys.path.insert(0, folder)
        from _peers import peers_python as find

        python, where = find(make_env, peers_python)
        click.echo(where, err=True)
        # the script imports fibernet from beside the loadtest folder, what it starts by name
        # comes from the peers' bin/ first
        path = [os.path.dirname(python), os.environ.get("PATH", "")]
        env = dict(os.environ, PATH=os.pathsep.join(path),
                   PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(folder),
                                                            os.environ.get("PYTHONPATH")])))
    sys.exit(subprocess.call([python, os.path.join(folder, script + ".py"), *args], env=env))


if __name__ == "__main__":  # pragma: no cover
    cli()
