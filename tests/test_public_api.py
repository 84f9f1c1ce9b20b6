"""The public names: everything in ``fibernet.__all__`` resolves, and the contract of
DESIGN.md (its table of names) is there with the signatures it promises."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

import fibernet
import fibernet as fn

pytestmark = pytest.mark.timeout(20)

# The table "Public contract" of DESIGN.md.
CONTRACT_FUNCTIONS = [
    "run",
    "spawn",
    "current_fiber",
    "current_scheduler",
    "sleep",
    "yield_now",
    "perform",
    "choice",
    "wrap",
    "guard",
    "with_nack",
    "always",
    "never",
    "wait_op",
    "timer_op",
    "readable_op",
    "writable_op",
    "parallel_map",
    "shared",
]
CONTRACT_METHODS = {
    "Fiber": ["join", "join_op", "cancel"],
    "Channel": ["put", "get", "put_op", "get_op", "close"],
    "Condition": ["signal", "wait", "wait_op"],
}
# Named in the table of docs/pages/reference/core.md beside the contract.
INTROSPECTION = ["schedulers", "fibers", "fiber_by_name", "scheduler_by_name", "base_op", "MockClock"]


def test_every_name_in_all_resolves():
    assert len(fibernet.__all__) == len(set(fibernet.__all__))
    for name in fibernet.__all__:
        assert getattr(fibernet, name) is not None, name


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from fibernet import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(fibernet.__all__)


@pytest.mark.parametrize("name", CONTRACT_FUNCTIONS + INTROSPECTION)
def test_contract_functions_exist_and_are_exported(name):
    assert name in fibernet.__all__
    assert callable(getattr(fibernet, name))


@pytest.mark.parametrize("cls, methods", CONTRACT_METHODS.items())
def test_contract_classes_have_their_methods(cls, methods):
    assert cls in fibernet.__all__
    klass = getattr(fibernet, cls)
    for m in methods:
        assert callable(getattr(klass, m, None)), f"{cls}.{m}"


def test_errors_form_one_hierarchy_with_cancelled_outside_exception():
    for name in ("ChannelClosed", "Timeout", "NoScheduler"):
        assert issubclass(getattr(fn, name), fn.FibernetError)
    assert issubclass(fn.FibernetError, Exception)
    assert issubclass(fn.Cancelled, BaseException)
    assert not issubclass(fn.Cancelled, Exception)
    assert issubclass(fn.Timeout, TimeoutError)


def test_signatures_of_the_contract():
    run = inspect.signature(fn.run).parameters
    assert list(run)[:2] == ["main", "args"]
    assert run["args"].kind is inspect.Parameter.VAR_POSITIONAL
    assert run["threads"].kind is inspect.Parameter.KEYWORD_ONLY and run["threads"].default == 1

    spawn = inspect.signature(fn.spawn).parameters
    assert list(spawn)[:2] == ["fn", "args"]
    assert spawn["name"].default is None
    assert spawn["parallel"].default is False

    assert inspect.signature(fn.Fiber.join).parameters["timeout"].default is None
    assert inspect.signature(fn.Channel).parameters["capacity"].default == 0
    assert list(inspect.signature(fn.parallel_map).parameters) == ["fn", "items"]


def test_base_op_is_the_base_operation_class():
    assert fn.base_op is fn.BaseOp
    assert issubclass(fn.BaseOp, fn.Operation)


def test_version():
    assert isinstance(fibernet.__version__, str) and fibernet.__version__


def test_the_reference_table_names_the_contract():
    page = pathlib.Path(__file__).resolve().parents[1] / "docs" / "pages" / "reference" / "core.md"
    table = page.read_text().split(":::")[0]
    for name in CONTRACT_FUNCTIONS + INTROSPECTION + list(CONTRACT_METHODS):
        assert re.search(rf"`[^`]*\b{name}\b[^`]*`", table), f"{name} is not in the table of {page.name}"
