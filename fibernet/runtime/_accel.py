"""Which implementation of the hot path runs: the compiled one or the pure-Python one.

The hot-path modules (the scheduler, fibers, the poller, the timer heap, the operation
protocol, channels, socket waits) are plain Python.  The build compiles each of them with
Cython, as gevent does, into a private extension module beside it (``scheduler.py`` into
``_c_scheduler``), typed by the ``.pxd`` file of that name (``_c_scheduler.pxd``).  The last
line of each pure module calls :func:`import_c_accel`, which replaces the module's globals
with the compiled copy's -- unless ``FIBERNET_PURE_PYTHON`` is set (to anything but ``0``)
when fibernet is imported, or the compiled copy was not built (no compiler or no Cython where
it was installed), or one is older than its source (edited since the last install: a warning
says so, and then none runs compiled, as they use each other's types): then the pure module
stays.  :func:`compiled` tells which one each module runs.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

PURE_PYTHON = os.environ.get("FIBERNET_PURE_PYTHON", "") not in ("", "0")

# The module's pure name -> whether its compiled copy is the one in use.
_loaded: dict[str, bool] = {}
_KEEP = ("__name__", "__file__", "__spec__", "__loader__", "__package__", "__doc__", "__builtins__")


def import_c_accel(globs: dict, cname: str) -> None:
    """Swap the calling module's globals for those of its compiled copy ``cname``."""
    name = globs["__name__"]
    if name == cname:  # running as the compiled copy itself
        return
    if PURE_PYTHON or not _all_fresh():
        _loaded[name] = False
        return
    try:
        mod = importlib.import_module(cname)
    except ImportError:  # not built here: the pure module serves
        _loaded[name] = False
        return
    kept = {k: globs[k] for k in _KEEP if k in globs}
    globs.clear()
    globs.update(mod.__dict__)
    globs.update(kept)
    _loaded[name] = True


_fresh: bool | None = None


def _all_fresh() -> bool:
    """Is every compiled copy in the package at least as new as its source?  Decided once
    for all of them (a warning says why not): the compiled modules use each other's types, so
    they run all together or not at all."""
    global _fresh
    if _fresh is None:
        package = Path(__file__).resolve().parent.parent
        stale = [
            str(binary.relative_to(package.parent))
            for binary in package.rglob("_c_*.so")
            if _stale(str(binary.with_name(binary.name[3:].split(".", 1)[0] + ".py")), str(binary))
        ]
        _fresh = not stale
        if stale:
            warnings.warn(
                f"fibernet runs its pure-Python modules: these compiled copies are older than their "
                f"sources (run the install command again to rebuild them): {', '.join(stale)}",
                RuntimeWarning,
                stacklevel=3,
            )
    return _fresh


def _stale(source: str | None, binary: str | None) -> bool:
    """Was the source edited after its compiled copy was built beside it (an editable
    install not rebuilt since)?  Two seconds of slack: a wheel's files land in any order."""
    if not source or not binary:
        return False
    try:
        return os.path.getmtime(source) > os.path.getmtime(binary) + 2.0
    except OSError:
        return False


def compiled() -> dict[str, bool]:
    """For each hot-path module imported so far, whether its compiled copy runs."""
    return dict(_loaded)


def in_python_frame(fn: Callable[[], object]) -> object:
    """Call ``fn()`` from a Python frame (this module is never compiled).

    greenlet tells a suspended greenlet from a running one by its saved Python frame: one whose
    stack holds compiled code only looks as if it ran in another thread, and its context cannot
    be set.  Runner greenlets start here, so each always has this frame at its base.
    """
    return fn()
