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


_WEB = {"fastapi", "uvicorn", "starlette"}


def _python_files(*skip: str) -> list[Path]:
    out = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in {".venv", "data", "artifacts", *skip}:
            continue
        out.append(path)
    return out


def test_only_the_service_imports_fastapi() -> None:
    """The HTTP service is an adapter beside ui/: nothing else imports FastAPI, Starlette or
    uvicorn (tests of the service excepted)."""
    files = _python_files("service", "tests")
    assert len(files) > 50
    for path in files:
        assert not _imports(path) & _WEB, path
    assert _imports(ROOT / "service" / "app.py") & _WEB


def test_the_service_is_not_inside_the_core_package() -> None:
    assert not (ROOT / "glmtts" / "service").exists()
    for path in _python_files("tests", "service", "bench", "scripts"):
        imported = _imports(path)
        if "service" in imported:  # only the command-line entry may start it, lazily
            assert path == ROOT / "glmtts" / "cli.py", path


def test_no_module_of_the_core_grows_past_450_lines() -> None:
    """Long files did several jobs; keep each module of glmtts/ and monitoring/ to one."""
    long = [f"{p.relative_to(ROOT)}: {n}" for package in ("glmtts", "monitoring")
            for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert not long, long
