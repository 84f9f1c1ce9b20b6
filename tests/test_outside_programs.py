"""The outside programs the tests drive (curl, openssl, wrk, h2load, haproxy, systemd-analyze,
redis-server, PostgreSQL's initdb, chromium): a test
that needs one skips, naming its Debian package, when it is absent (fails under CI); the
README's test section lists them and ``.ci/run`` installs every one."""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest

from .conftest import PROGRAMS, program

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_list_names_the_programs_the_tests_drive():
    assert set(PROGRAMS) == {
        "curl", "openssl", "wrk", "h2load", "haproxy", "systemd-analyze", "redis-server", "initdb", "chromium"
    }


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_an_absent_program_skips_naming_its_package(name, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        program(name)
    assert f"{name} is not installed" in str(skipped.value)
    assert f"Debian package {PROGRAMS[name]}" in str(skipped.value)


def test_under_ci_an_absent_program_fails(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="wrk is not installed .*.ci/run must install it"):
        program("wrk")


def test_a_present_program_is_its_path(monkeypatch, requires):
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/opt/bin/{name}")
    assert requires("curl") == "/opt/bin/curl"


def test_ci_installs_every_program():
    script = (ROOT / ".ci" / "run").read_text()
    listed = re.search(r"for pair in ([^;]+);", script).group(1).replace("\\\n", " ")
    pairs = dict(p.split(":") for p in listed.split())
    assert pairs.items() >= PROGRAMS.items()


def test_the_readme_test_section_names_every_program_and_package():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Tests"):]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
    for name, package in PROGRAMS.items():
        assert f"`{name}`" in section, name
        assert package in section, package
