"""The documentation builds strictly, and its Python code blocks run.

Every ```python block of a page runs, in order, in one fresh interpreter per page (a page is
one story: later blocks use what earlier ones defined).  A block whose first line is
``# not run`` is only shown (a module that needs a real network service, say).  The blocks
assert what they claim, so a page whose example went stale fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted((DOCS / "pages").rglob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def code_of(page: Path) -> str:
    blocks = [b for b in BLOCK.findall(page.read_text()) if not b.startswith("# not run")]
    return "\n".join(blocks)


def test_every_page_is_in_the_nav() -> None:
    nav = (DOCS / "mkdocs.yml").read_text()
    for page in (DOCS / "pages").rglob("*.md"):
        assert str(page.relative_to(DOCS / "pages")) in nav, f"{page} is not in mkdocs.yml's nav"


@pytest.mark.timeout(120)
def test_docs_build_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="pip install -e '.[test]' installs mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(DOCS / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "core" / "index.html").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page", [p for p in PAGES if code_of(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    script = tmp_path / "page.py"
    script.write_text(code_of(page))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=50
    )
    assert done.returncode == 0, f"{page.name}: the code blocks failed:\n{done.stdout}\n{done.stderr}"
