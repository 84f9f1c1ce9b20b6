"""The layers point down only (DESIGN.md): a module may import its own layer and those below,
never one above -- not even lazily inside a function.  Read from the source with ``ast``.

    errors < runtime < ops (and parallel) < net < actors, patch, bus, http < server, testing
    < cli, examples

``fibernet/__init__.py`` is the package's facade and re-exports every layer; importing
``fibernet`` itself counts as importing the top of the library (the server layer).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RANKS = {
    "errors": 0,
    "runtime": 1,
    "ops": 2,
    "parallel": 2,
    "net": 3,
    "actors": 4,
    "patch": 4,
    "bus": 4,
    "http": 4,
    "server": 5,
    "testing": 5,
    "examples": 6,
    "cli": 6,
}
FACADE_RANK = RANKS["server"]


def _layer(module: str) -> str | None:
    """The layer of a dotted module name of fibernet or cli; None for anything else."""
    parts = module.split(".")
    if parts[0] == "cli":
        return "cli"
    if parts[0] != "fibernet":
        return None
    if len(parts) == 1:
        return "fibernet"
    return parts[1].removesuffix(".py")


def _rank(layer: str, where: str) -> int:
    if layer == "fibernet":
        return FACADE_RANK
    assert layer in RANKS, f"{where}: fibernet.{layer} has no layer: add it to RANKS in {__file__}"
    return RANKS[layer]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path):
    """(line, imported module) for every import in the file, wherever it is."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if node.module is None or module == "fibernet":  # from fibernet import actors
                for alias in node.names:
                    candidate = f"{module}.{alias.name}"
                    sub = ROOT / candidate.replace(".", "/")
                    yield node.lineno, candidate if sub.is_dir() or sub.with_suffix(".py").exists() else module
            else:
                yield node.lineno, module


def _violations() -> list[str]:
    found = []
    for path in sorted([*(ROOT / "fibernet").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]):
        name = _module_name(path)
        if name == "fibernet":
            continue  # the facade
        where = str(path.relative_to(ROOT))
        mine = _rank(_layer(name), where)
        for line, target in _imports(path):
            layer = _layer(target)
            if layer is not None and _rank(layer, f"{where}:{line}") > mine:
                found.append(f"{where}:{line} imports {target} (layer {layer} is above {_layer(name)})")
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert _violations() == []


def test_the_check_sees_a_lazy_import_inside_a_function(tmp_path, monkeypatch):
    """The checker itself: an upward import inside a method is found."""
    pkg = tmp_path / "fibernet" / "runtime"
    pkg.mkdir(parents=True)
    (tmp_path / "cli").mkdir()
    (pkg / "thing.py").write_text("def f():\n    from fibernet.ops.join import join\n    return join\n")
    (tmp_path / "fibernet" / "ops").mkdir()
    (tmp_path / "fibernet" / "ops" / "join.py").write_text("from ..runtime import thing\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations() == ["fibernet/runtime/thing.py:2 imports fibernet.ops.join (layer ops is above runtime)"]
