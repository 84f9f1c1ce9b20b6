"""Builds the compiled hot path: each ``_c_NAME.pxd`` in the package declares the types of
``NAME.py`` beside it, which Cython compiles into the extension module ``_c_NAME`` (gevent's
way: one source, run as Python or compiled).  See ``fibernet/runtime/_accel.py``.

Without Cython or a C compiler, or with ``FIBERNET_PURE_PYTHON=1``, the install goes on with a
warning and fibernet runs the pure-Python modules.  So it does on a free-threaded CPython (3.13t):
an extension module that does not declare itself safe without the GIL turns the GIL back on
when it is imported, and the compiled copies do not claim that (their C code reads and replaces
object fields without the per-object locking the interpreter does for the pure modules).
"""

import os
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent


def _warn(message: str) -> None:
    print(f"WARNING: fibernet: {message}; the pure-Python hot path will be used", file=sys.stderr)


def ext_modules() -> list:
    if os.environ.get("FIBERNET_PURE_PYTHON", "") not in ("", "0"):
        return []
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        _warn("a free-threaded CPython (the compiled modules would turn the GIL back on)")
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError as exc:
        _warn(f"Cython is not available ({exc})")
        return []
    exts = []
    for pxd in sorted((HERE / "fibernet").rglob("_c_*.pxd")):
        rel = pxd.relative_to(HERE)
        source = rel.with_name(rel.name[len("_c_") :]).with_suffix(".py")
        module = ".".join(rel.with_suffix("").parts)
        exts.append(Extension(module, [str(source)], depends=[str(rel)]))
    newest = max(p.stat().st_mtime for p in [Path(__file__), *(HERE / "fibernet").rglob("_c_*.pxd")])
    built = []
    for ext in exts:  # one at a time: a module Cython fails on stays pure, the others not
        # Cython tracks the .py, not the .pxd files of other names that type it and the
        # modules it cimports: regenerate the C when any of them (or these settings) changed
        # since, or a compiled module would call another through a stale method table.
        c_file = HERE / "build" / "cython" / Path(ext.sources[0]).with_suffix(".c")
        stale = not c_file.exists() or c_file.stat().st_mtime < newest
        try:
            built += cythonize(
                [ext],
                force=stale,
                build_dir="build/cython",
                quiet=True,
                compiler_directives={
                    "language_level": 3,
                    "annotation_typing": False,  # types come from the .pxd files only
                    "binding": True,
                    "boundscheck": True,  # same semantics as Python: an index error, never a crash
                    "wraparound": True,
                    "cdivision": False,
                },
            )
        except Exception as exc:
            _warn(f"Cython failed on {ext.sources[0]} ({exc})")
    return built


class OptionalBuildExt(build_ext):
    """A compile that fails leaves the module pure instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            _warn(f"the C build failed ({exc})")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(f"compiling {ext.name} failed ({exc})")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
