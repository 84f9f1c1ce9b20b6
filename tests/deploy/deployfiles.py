"""Readers for the files of deploy/ (Dockerfile, systemd units) and a check that a command line
is one ``fibernet serve`` accepts, parsed by the real click command (its callback not run)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from fibernet_cli.main import serve
from fibernet_cli.settings import Settings

from .conftest import need_module

# -- Dockerfile ----------------------------------------------------------------------------
# Parsed by the `dockerfile` package: BuildKit's own parser (Go, compiled into the wheel).


def dockerfile_commands(path: Path) -> list[Any]:
    """The instructions of a Dockerfile (``.cmd`` upper case, ``.flags``, ``.value``, ``.json``)."""
    dockerfile = need_module("dockerfile", "dockerfile")
    return list(dockerfile.parse_file(str(path)))


def final_stage(commands: list[Any]) -> list[Any]:
    starts = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    return commands[starts[-1]:]


def exec_form(command: Any) -> list[str]:
    """The exec (JSON) form of CMD, ENTRYPOINT or HEALTHCHECK CMD; fails on the shell form."""
    assert command.json, f"{command.original}: use the exec (JSON) form, so the signal reaches fibernet"
    value = list(command.value)
    if command.cmd == "HEALTHCHECK":
        assert value[0] == "CMD", command.original
        value = value[1:]
    return value


def dockerfile_env(commands: list[Any]) -> dict[str, str]:
    """What ENV instructions set (``$VAR`` references left as they are)."""
    env: dict[str, str] = {}
    for c in commands:
        if c.cmd == "ENV":
            env.update(zip(c.value[::2], c.value[1::2], strict=True))
    return env


# -- systemd units -------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} (keys repeat, in order)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def unit_value(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = [v for k, v in sections.get(section, []) if k == key]
    assert values, f"no {key}= in [{section}]"
    return values[-1]


def unit_environment(sections: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in sections.get("Service", []):
        if key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = val
    return env


# -- fibernet serve --------------------------------------------------------------------------


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_serve(argv: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    """The settings ``fibernet serve`` makes of ``argv`` (``["fibernet", "serve", ...]``)
    with ``env`` set: click parses the flags and the FIBERNET_* variables as the real
    command would, and fails on an unknown flag or a bad value."""
    assert argv[:2] == ["fibernet", "serve"], f"not a `fibernet serve` command: {argv}"
    with _environment(env or {}):
        unknown = sorted(k for k in (env or {}) if k.startswith("FIBERNET_")
                         and k[len("FIBERNET_"):].lower() not in Settings.__dataclass_fields__)
        assert not unknown, f"no such fibernet serve setting: {unknown}"
        try:
            ctx = serve.make_context("serve", list(argv[2:]))
        except click.ClickException as exc:
            raise AssertionError(f"fibernet serve rejects {argv[2:]}: {exc.format_message()}") from None
        with ctx:
            return dict(ctx.params)
