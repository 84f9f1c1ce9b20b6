"""The command-line and report helpers the benchmark scripts share (``loadtest/_bench.py``)."""

from __future__ import annotations

import json
import socket

import _bench
import pytest


def test_argument_parser_describes_with_the_first_paragraph_of_the_docstring():
    parser = _bench.argument_parser("Title line.\n\nMore text.\n")
    assert parser.description == "Title line."


def test_fill_defaults_sets_only_what_the_command_line_left_out():
    parser = _bench.argument_parser("x")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--n", type=int)
    args = parser.parse_args(["--rounds", "7"])
    _bench.fill_defaults(args, {"rounds": 1, "n": 10})
    assert (args.rounds, args.n) == (7, 10)


@pytest.mark.parametrize(("text", "cpu"), [("1", 1), ("none", None), ("None", None)])
def test_cpu_option(text, cpu):
    assert _bench.cpu_option(text) == cpu


def test_comma_list_keeps_known_items_and_names_unknown_ones(capsys):
    parser = _bench.argument_parser("x")
    assert _bench.comma_list(parser, " a, b,,", ("a", "b"), "--impls") == ["a", "b"]
    with pytest.raises(SystemExit) as exit_info:
        _bench.comma_list(parser, "a,c,d", ("a", "b"), "--impls")
    assert exit_info.value.code == 2
    assert "--impls: unknown c, d" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("row", "cell"),
    [
        ({"errors": 2, "bar": "b", "pass": True}, "ERROR x2"),
        ({"errors": 0, "bar": "b", "pass": True}, "PASS"),
        ({"errors": 0, "bar": "b", "pass": False}, "FAIL"),
        ({"errors": 0, "bar": "b", "pass": None}, "n/a"),
        ({"errors": 0, "bar": "", "pass": None}, "-"),
    ],
)
def test_result_cell(row, cell):
    assert _bench.result_cell(row) == cell


def test_exit_status_fails_on_a_failed_result_or_an_error():
    ok = _bench.Samples()
    assert _bench.exit_status([{"pass": True}, {"pass": None}], ok) == 0
    assert _bench.exit_status([{"pass": True}, {"pass": False}], ok) == 1
    errored = _bench.Samples(errors={("w", "i"): ["boom"]})
    assert _bench.exit_status([], errored) == 1


def test_describe_plan_shows_the_first_child_command():
    plan = [("spawn", "fibernet", {"n": 3}), ("spawn", "gevent", {"n": 3})]
    text = _bench.describe_plan("bench.py", plan, 5, None)
    first, example = text.split("\n")
    assert first == "2 measurements x 5 rounds, each in a fresh child, e.g.:"
    assert example.strip().endswith("bench.py --child spawn fibernet '{\"n\": 3}'")


def test_save_json_writes_only_with_a_path(tmp_path, capsys):
    _bench.save_json(None, {"rows": []})
    assert capsys.readouterr().out == ""
    path = tmp_path / "out.json"
    _bench.save_json(str(path), {"rows": [1]})
    assert capsys.readouterr().out == f"wrote {path}\n"
    data = json.loads(path.read_text())
    assert data["rows"] == [1] and "environment" in data


def test_free_port_can_be_bound():
    port = _bench.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
