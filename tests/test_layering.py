"""The import rules of docs/architecture.md ("Layering"), checked on the source.

Every ``import``/``from ... import`` statement of a package, at module level or inside
a function, is read with :mod:`ast` (nothing is imported):

- ``common`` imports neither ``server`` nor ``client``;
- ``server`` imports ``client`` nowhere;
- ``client`` imports no ``server``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> the top-level packages it must never import.
FORBIDDEN = {
    "common": ("server", "client"),
    "server": ("client",),
    "client": ("server",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in ``path``, absolute or relative
    (a relative import is resolved against the file's own package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return sorted(found)


def violations(package: str) -> list[str]:
    """``file:line imports module`` for each import the rules forbid in ``package``."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package):
    assert (ROOT / package).is_dir()
    assert violations(package) == []


def test_the_check_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    source = tmp_path / "common" / "sub"
    source.mkdir(parents=True)
    (source / "mod.py").write_text(
        "def f():\n    import client.app\n    from .. import x\n"
        "from server.loop import Runner\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert violations("common") == [
        "common/sub/mod.py:2 imports client.app",
        "common/sub/mod.py:4 imports server.loop",
    ]
