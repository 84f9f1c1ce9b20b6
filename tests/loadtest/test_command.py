"""``fibernet loadtest``: SCRIPT --help reaches the script's own parser; a missing dependency is
one line naming the extra to install; a peer that is not installed is a skipped row, not a
traceback; and all of it works from a normal (non-editable) install of the package."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from .conftest import LOADTEST, ROOT

RUN_TIMEOUT = 60.0


def run(argv: list[str], timeout: float = RUN_TIMEOUT, cwd: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL)


def fibernet(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "fibernet", *args])


def without(modules: list[str], script: str, *args: str) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in an interpreter where ``modules`` cannot be imported."""
    code = ("import runpy, sys\n"
            f"for name in {modules!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = [{script!r}, *{list(args)!r}]\n"
            f"runpy.run_path({script!r}, run_name='__main__')\n")
    return run([sys.executable, "-c", code], cwd=ROOT)


def test_with_no_script_or_help_it_lists_the_scripts():
    listed = fibernet("loadtest")
    assert listed.returncode == 0, listed.stderr
    assert {"load", "primitives", "compare"} <= set(listed.stdout.split()), listed.stdout
    helped = fibernet("loadtest", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "Usage:" in helped.stdout and "fibernet[loadtest]" in helped.stdout
    assert set(listed.stdout.split()) <= set(helped.stdout.split())


def test_a_script_runs_on_the_peers_python(tmp_path):
    """``fibernet loadtest --peers-python PY NAME ARGS`` runs loadtest/NAME.py ARGS on PY (here
    a wrapper that logs its command line, then runs this interpreter) and exits with the
    script's status; options after NAME are the script's."""
    log = tmp_path / "calls.log"
    peers = tmp_path / "peers-python"
    peers.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} "$@"\n')
    peers.chmod(0o755)

    done = fibernet("loadtest", "--peers-python", str(peers), "primitives", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: primitives.py") and f"peers from {peers}" in done.stderr
    def ran(script: str, args: str) -> bool:  # (the installed folder may link to loadtest/)
        path, _, rest = log.read_text().splitlines()[-1].partition(" ")
        return os.path.samefile(path, os.path.join(LOADTEST, script)) and rest == args

    assert len(log.read_text().splitlines()) == 1 and ran("primitives.py", "--help")

    wrong = fibernet("loadtest", "--peers-python", str(peers), "actors", "--peers-python", "x")
    assert wrong.returncode == 2 and "unrecognized arguments: --peers-python x" in wrong.stderr, wrong.stderr
    assert ran("actors.py", "--peers-python x")

    unknown = fibernet("loadtest", "--peers-python", str(peers), "nonesuch")
    assert unknown.returncode == 2 and "is not one of" in unknown.stderr


@pytest.mark.parametrize("script", ["load", "primitives"])
def test_script_help_is_the_scripts_own(script):
    pytest.importorskip("hdrh", exc_type=ImportError, reason="the load generator needs hdrhistogram")
    done = fibernet("loadtest", script, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}.py"), done.stdout


def test_load_without_hdrhistogram_names_the_extra_in_one_line():
    done = without(["hdrh"], os.path.join(LOADTEST, "load.py"), "--help")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "the load generator needs hdrhistogram, which is not installed: pip install 'fibernet[loadtest]'"
    ]


def test_a_peer_that_is_not_installed_is_a_skipped_row():
    done = without(["gevent"], os.path.join(LOADTEST, "primitives.py"), "--quick", "--workloads", "spawn",
                   "--impls", "fibernet,gevent", "--cpu", "none")
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "skipped, not installed: gevent (no module 'gevent')" in done.stdout, done.stdout
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith("spawn ")]
    gevent = [[cell.strip() for cell in row] for row in rows if row[1].strip() == "gevent"]
    assert len(gevent) == 3 and all(row[-1] == "skipped (not installed)" for row in gevent), done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.install
@pytest.mark.timeout(300)
def test_a_normal_install_has_the_loadtest_scripts(tmp_path):
    """``pip install .`` (not editable) into a fresh venv: the scripts come with it."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # FIBERNET_PURE_PYTHON: no compiled hot path (tests/runtime/test_compiled.py builds it).
    env = dict(os.environ, FIBERNET_PURE_PYTHON="1")
    installed = run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", ROOT], timeout=240,
                    env=env)
    assert installed.returncode == 0, installed.stderr
    command = str(env_dir / "bin" / "fibernet")
    elsewhere = str(tmp_path)  # not the checkout: nothing may come from it

    listed = run([command, "loadtest"], cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert {"load", "primitives", "compare"} <= set(listed.stdout.split()), listed.stdout

    own_help = run([command, "loadtest", "primitives", "--help"], cwd=elsewhere)
    assert own_help.returncode == 0 and own_help.stdout.startswith("usage: primitives.py"), own_help

    load = run([command, "loadtest", "load", "--help"], cwd=elsewhere)  # without the loadtest extra
    assert load.returncode != 0 and "Traceback" not in load.stderr, load.stderr
    assert "pip install 'fibernet[loadtest]'" in load.stderr, load.stderr

    where = run([python, "-c", "import fibernet_loadtest, fibernet; print(fibernet_loadtest.__file__);"
                 "print(fibernet.__file__)"], cwd=elsewhere)
    assert str(env_dir) in where.stdout and ROOT not in where.stdout, where.stdout

    as_module = run([python, "-m", "fibernet", "--version"], cwd=elsewhere)
    assert as_module.returncode == 0 and "0." in as_module.stdout, as_module


def test_actors_skips_a_peer_that_is_not_installed():
    done = without(["gevent"], os.path.join(LOADTEST, "actors.py"), "--quick", "--impls", "fibernet,gevent",
                   "--workloads", "call", "--cpu", "none", "--n", "2000")
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "skipped, not installed: gevent (no module 'gevent')" in done.stdout, done.stdout
    gevent = [line for line in done.stdout.splitlines() if line.startswith("call ") and "| gevent " in line]
    assert len(gevent) == 2 and all(line.endswith("skipped (not installed)") for line in gevent), done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
