"""Layer rules of ARCHITECTURE.md that ruff's banned-api cannot express per folder."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engines_import_neither_monitoring_nor_streamlit() -> None:
    files = list((ROOT / "glmtts" / "engines").rglob("*.py"))
    assert files
    for path in files:
        assert not _imports(path) & {"monitoring", "streamlit"}, path


def test_only_the_ui_layer_imports_streamlit() -> None:
    for package in ("glmtts", "monitoring"):
        for path in (ROOT / package).rglob("*.py"):
            assert "streamlit" not in _imports(path), path


def test_fastapi_stays_in_the_service_package() -> None:
    for package in ("glmtts", "monitoring", "ui", "pages"):
        for path in (ROOT / package).rglob("*.py"):
            if "service" in path.relative_to(ROOT).parts:
                continue
            assert not _imports(path) & {"fastapi", "uvicorn"}, path
