"""The package's rules: no TTS or Streamlit imports, pynvml in one module, a light import."""

from __future__ import annotations

import ast
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

RunPython = Callable[..., subprocess.CompletedProcess[str]]


PACKAGE = Path(__file__).resolve().parents[2] / "monitoring"


def imported_roots(path: Path) -> set[str]:
    """Top-level modules imported by ``path``, including ``importlib.import_module("x")``."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                roots.add(first.value.split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_forbidden_imports() -> None:
    for path in PACKAGE.glob("*.py"):
        roots = imported_roots(path)
        assert not roots & {"glmtts", "streamlit", "ui", "pages"}, path
        assert "torch" not in roots, f"{path}: read torch from sys.modules, never import it"


def test_pynvml_lives_in_one_module() -> None:
    users = [p.name for p in PACKAGE.glob("*.py") if "pynvml" in imported_roots(p)]
    assert users == ["nvml.py"]


def test_import_is_light(run_python: RunPython) -> None:
    done = run_python(
        "import json, sys, monitoring; "
        "print(json.dumps([m for m in ('torch', 'pynvml', 'pandas', 'streamlit') "
        "if m in sys.modules]))"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
