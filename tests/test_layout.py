"""Who may import whom (DESIGN.md): checked on the source, so a stray import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Folder -> top-level packages its modules must never import.
FORBIDDEN = {
    "kasal": {"activities", "workflows", "api", "cli", "tests", "bench"},
    "activities": {"workflows", "api", "cli", "tests", "bench"},
    "workflows": {"api", "cli", "tests", "bench"},
    "api": {"activities", "cli", "tests", "bench"},
    "bench": {"tests"},
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_each_folder_imports_only_what_it_may():
    wrong = [
        f"{path.relative_to(ROOT)} imports {package}"
        for folder, forbidden in FORBIDDEN.items()
        for path in sorted((ROOT / folder).rglob("*.py"))
        for package in sorted(imported_packages(path) & forbidden)
    ]
    assert not wrong, "\n".join(wrong)
