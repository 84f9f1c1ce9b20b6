"""The public API is typed for a user's type checker: mypy on a small user program sees
``run``, ``spawn``, ``Fiber.join``, ``perform``, ``choice``, ``wrap`` and ``Channel`` with
useful types (``reveal_type``), and catches an obvious mistake; and mypy finds the package
where the README's install put it."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)

PROGRAM = '''
import fibernet as fn


def work(n: int) -> str:
    return str(n)


def main() -> int:
    ch: fn.Channel[int] = fn.Channel()
    fiber = fn.spawn(work, 1)
    reveal_type(fiber)  # 1
    reveal_type(fiber.join())  # 2
    reveal_type(ch.get())  # 3
    reveal_type(ch.get_op())  # 4
    reveal_type(fn.perform(ch.get_op()))  # 5
    reveal_type(fn.perform(fn.wrap(ch.get_op(), float)))  # 6
    reveal_type(fn.perform(fn.choice(ch.get_op(), fn.wrap(fn.wait_op(1.0), lambda: -1))))  # 7
    reveal_type(fiber.join_op())  # 8
    ch.put("not an int")  # the mistake
    return ch.get()


reveal_type(fn.run(main))  # 9
'''

EXPECTED = [
    "fibernet.runtime.fiber.Fiber[str]",
    "str",
    "int",
    "fibernet.ops.operation.BaseOp[int]",
    "int",
    "float",
    "int",
    "fibernet.ops.operation.Operation[str]",
    "int",
]


def mypy(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--show-traceback", *args],
                          capture_output=True, text=True, timeout=150, cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> str:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    folder = tmp_path_factory.mktemp("typed")
    (folder / "user_program.py").write_text(PROGRAM)
    # From the checkout (mypy looks in the current directory first), so that these types are
    # checked whichever way the package was installed; the next test checks the install.
    done = mypy("--strict", "--follow-imports=silent", str(folder / "user_program.py"), cwd=ROOT)
    return done.stdout + done.stderr


def test_the_public_api_has_useful_types(checked):
    revealed = re.findall(r'Revealed type is "([^"]+)"', checked)
    assert revealed == EXPECTED, checked


def test_an_obvious_type_error_is_caught(checked):
    mistake = 'Argument 1 to "put" of "Channel" has incompatible type "str"; expected "int"'
    assert mistake in checked, checked
    assert "Found 1 error" in checked, checked


def test_mypy_finds_fibernet_where_the_readme_install_put_it(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    program = tmp_path / "uses_fibernet.py"
    program.write_text("import fibernet\n\nreveal_type(fibernet.run)\n")
    done = mypy(str(program), cwd=tmp_path)  # not the checkout: only the install can help
    assert "Cannot find implementation or library stub" not in done.stdout, (
        "mypy cannot see fibernet in this environment: an editable install through setuptools' "
        "import hook hides it; install as the README says (--config-settings editable_mode=strict)\n"
        + done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "def [T] (main: def (*Any, **Any) -> T," in done.stdout, done.stdout
