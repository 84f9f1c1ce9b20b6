"""The command-line and report helpers the benchmark scripts share (``loadtest/_bench.py``)."""

from __future__ import annotations

import json
import socket

import _bench
import pytest


def test_the_parser_describes_with_the_first_paragraph_of_the_docstring():
    parser = _bench.parser("Title line.\n\nMore text.\n")
    assert parser.description == "Title line."


@pytest.mark.parametrize("quick", [False, True])
def test_parse_fills_only_what_the_command_line_left_out(quick):
    parser = _bench.parser("x", duration="seconds", cpu=None, timeout=None)
    parser.add_argument("--n", type=int)
    args = _bench.parse(parser, ["--rounds", "7", *(["--quick"] if quick else [])],
                        {"rounds": 1, "n": 10, "duration": 1.0}, {"rounds": 3, "n": 100, "duration": 5.0})
    assert (args.rounds, args.n, args.duration) == ((7, 10, 1.0) if quick else (7, 100, 5.0))
    assert not hasattr(args, "cpu") and not hasattr(args, "timeout")


def test_parse_checks_the_comma_lists_and_the_cpu(capsys):
    parser = _bench.parser("x")
    _bench.comma_option(parser, "impls", ("fibernet", "gevent"))
    args = _bench.parse(parser, ["--cpu", "none"], {}, {}, {"impls": ("fibernet", "gevent")},
                        {"gevent": ("no_such_module_here",)})
    assert (args.cpu, args.impls) == (None, ["fibernet", "gevent"])
    assert args.skipped == {"gevent": "no_such_module_here"}
    with pytest.raises(SystemExit):
        _bench.parse(parser, ["--impls", "gevent"], {}, {}, {"impls": ("fibernet", "gevent")})
    assert "--impls must include fibernet" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "cpu"), [("1", 1), ("none", None), ("None", None)])
def test_cpu_option(text, cpu):
    assert _bench.cpu_option(text) == cpu


def test_comma_list_keeps_known_items_and_names_unknown_ones(capsys):
    parser = _bench.parser("x")
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
