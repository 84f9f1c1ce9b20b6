"""The compiled hot path and its pure-Python fallback (``fibernet/runtime/_accel.py``).

Which one runs is decided at import time, so each check runs in a fresh interpreter.  The
compiled copy must be the one running wherever it can be built (CI, or a machine with a C
compiler): a build that silently fell back would otherwise pass every other test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One _c_NAME.pxd beside each compiled NAME.py: setup.py compiles what these name.
ACCELERATED = sorted(
    ".".join(p.relative_to(ROOT).with_name(p.name[len("_c_") :]).with_suffix("").parts)
    for p in (ROOT / "fibernet").rglob("_c_*.pxd")
)

REPORT = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from fibernet.runtime import compiled
from fibernet.runtime.scheduler import Scheduler
from fibernet.runtime.fiber import Fiber
import fibernet
from fibernet.server import http, http_protocol
print(json.dumps({"compiled": compiled(), "scheduler": Scheduler.__module__,
                  "http": [http._serve_conn.__module__, http_protocol.ServerProtocol.__module__],
                  "park": type(Scheduler._park).__name__, "run": fibernet.run(lambda: 6 * 7),
                  "fiber_extension_type": not Fiber.__flags__ & (1 << 9),  # (Py_TPFLAGS_HEAPTYPE)
                  "fiber_int": Fiber[int].__origin__ is Fiber and Fiber[int].__args__ == (int,)}))
"""


def report(pure: str | None, python: str = sys.executable, extra_env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FIBERNET_PURE_PYTHON"}
    if pure is not None:
        env["FIBERNET_PURE_PYTHON"] = pure
    env.update(extra_env or {})
    done = subprocess.run([python, "-c", REPORT, *ACCELERATED], capture_output=True, text=True,
                          env=env, timeout=60, stdin=subprocess.DEVNULL, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def compiler_expected() -> bool:
    """CI always builds the compiled copy; so does any machine with a C compiler."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return os.environ.get("CI", "") not in ("", "false", "0") or shutil.which(cc) is not None


def test_every_hot_path_module_has_a_compiled_copy_declared():
    assert {"fibernet.runtime.scheduler", "fibernet.runtime.fiber", "fibernet.runtime.poller",
            "fibernet.ops.operation", "fibernet.http", "fibernet.server.http",
            "fibernet.server.http_protocol"} <= set(ACCELERATED)


def test_pure_python_setting_runs_the_pure_modules():
    got = report("1")
    assert got["compiled"] == {name: False for name in ACCELERATED}
    assert got["scheduler"] == "fibernet.runtime.scheduler" and got["park"] == "function"
    assert got["run"] == 42
    assert not got["fiber_extension_type"] and got["fiber_int"]


def test_pure_python_zero_means_compiled_where_built():
    assert report("0")["compiled"] == report(None)["compiled"]


def test_the_compiled_copy_runs_when_it_can_be_built():
    got = report(None)
    assert set(got["compiled"]) == set(ACCELERATED)
    if not all(got["compiled"].values()):
        missing = sorted(k for k, v in got["compiled"].items() if not v)
        if compiler_expected():
            pytest.fail(f"not compiled, though a C compiler is here (see the install's warnings): {missing}")
        pytest.skip(f"no C compiler here: {missing} run as pure Python")
    assert got["scheduler"] == "fibernet.runtime._c_scheduler"
    assert got["park"] == "cython_function_or_method"
    assert got["run"] == 42
    # A Fiber is an extension type (C fields, C calls from the scheduler and the socket wait)
    # that Fiber[int] still subscripts at run time, as typing.Generic's subclasses do.
    assert got["fiber_extension_type"] and got["fiber_int"]
    assert got["http"] == ["fibernet.server._c_http", "fibernet.server._c_http_protocol"]


@pytest.mark.install
@pytest.mark.timeout(300)
@pytest.mark.skipif(os.environ.get("FIBERNET_PURE_PYTHON", "") not in ("", "0"),
                    reason="tests the build, which the compiled pass covers")
def test_a_failed_compile_installs_the_pure_modules_with_a_warning(tmp_path):
    """``pip install .`` with a C compiler that fails: the install succeeds, says why the
    hot path is pure, and fibernet runs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    env = {**os.environ, "CC": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("FIBERNET_PURE_PYTHON", None)
    # --no-deps: the dependencies come from this interpreter's site-packages (PYTHONPATH below)
    src = tmp_path / "src"  # a copy: the build must not touch (or reuse) this checkout's build/
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", "*.so", "__pycache__", ".git"))
    installed = subprocess.run([python, "-m", "pip", "install", "-v", "--no-deps", str(src)],
                               capture_output=True, text=True, env=env, timeout=280, stdin=subprocess.DEVNULL)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert "the pure-Python hot path will be used" in installed.stdout + installed.stderr
    got = report(None, python, {"PYTHONPATH": sysconfig.get_paths()["purelib"]})
    assert got["compiled"] == {name: False for name in ACCELERATED}
    assert got["run"] == 42


def test_a_compiled_copy_older_than_its_source_is_stale(tmp_path):
    """An editable install whose source was edited since the build runs the source."""
    from fibernet.runtime._accel import _stale

    source, binary = tmp_path / "m.py", tmp_path / "_c_m.so"
    source.write_text("")
    binary.write_text("")
    os.utime(binary, (1000, 1000))
    os.utime(source, (1001, 1001))  # written in the same install: not stale
    assert not _stale(str(source), str(binary))
    os.utime(source, (1100, 1100))  # edited later
    assert _stale(str(source), str(binary))
    assert not _stale(str(source), None) and not _stale(None, str(binary))


FREE_THREADED_BUILD = """
import runpy, setuptools, sys, sysconfig, types
build = types.ModuleType("Cython.Build")  # (a stand-in: what would be compiled, uncompiled)
build.cythonize = lambda extensions, **options: list(extensions)
sys.modules.update({"Cython": types.ModuleType("Cython"), "Cython.Build": build})
real = sysconfig.get_config_var
sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else real(name)
setuptools.setup = lambda **options: print(len(options["ext_modules"]))
runpy.run_path("setup.py")
"""


@pytest.mark.timeout(300)
def test_a_free_threaded_interpreter_builds_no_compiled_module():
    """On a free-threaded CPython the compiled modules would turn the GIL back on when
    imported (they do not declare themselves safe without it): setup.py builds none there,
    and the pure modules run, free-threaded."""
    env = {k: v for k, v in os.environ.items() if k != "FIBERNET_PURE_PYTHON"}  # (it builds none either)
    done = subprocess.run([sys.executable, "-c", FREE_THREADED_BUILD], cwd=ROOT, capture_output=True,
                          text=True, timeout=280, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"], done.stdout
    assert "free-threaded" in done.stderr, done.stderr
