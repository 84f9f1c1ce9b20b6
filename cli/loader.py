"""Import ``module:attribute`` for ``fibernet serve``, with errors a user can act on."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import click


def load_app(spec: str, app_dir: str = ".", factory: bool = False) -> tuple[Callable[..., Any], str | None]:
    """The handler named by ``spec``, and the PROTOCOL its module declares (or None)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(
            f"{spec!r} is not module:attribute (e.g. mypkg.mymod:handle)", param_hint="APP"
        )
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(f"no module named {exc.name!r}", param_hint="APP") from None
        raise click.BadParameter(f"importing {module_name!r} failed: {exc}", param_hint="APP") from None
    except Exception as exc:  # noqa: BLE001 - any import-time error is the user's to fix
        raise click.BadParameter(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", param_hint="APP"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attr!r}", param_hint="APP"
            ) from None
    if factory:
        if not callable(obj):
            raise click.BadParameter(f"{spec} is not callable, so it cannot be a factory", param_hint="APP")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise click.BadParameter(
                f"the factory {spec} failed: {type(exc).__name__}: {exc}", param_hint="APP"
            ) from None
    if not callable(obj):
        raise click.BadParameter(
            f"{spec} is not a callable handler (it is {type(obj).__name__} {obj!r:.40})", param_hint="APP"
        )
    return obj, getattr(module, "PROTOCOL", None)
