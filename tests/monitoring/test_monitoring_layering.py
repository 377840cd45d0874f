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


#: Words of the TTS side that the generic layer must not know (engines declare what it needs).
TTS_WORDS = ("tts", "glm", "piper", "voice", "speech", "kv cache", "kv_cache", "sample rate",
             "sample_rate", "reference audio", "reference_audio", "vocoder", "phoneme",
             "text_chars", "audio")


def test_monitoring_names_no_tts() -> None:
    """monitoring/ is generic memory observability: nothing in it (code, docstrings, sentences
    the policy writes) names TTS; switch rules, the lighter request and the size feature come
    from the caller (the engines' capabilities)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "monitoring"
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for word in TTS_WORDS:
                if re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", line.lower()):
                    found.append(f"{path.relative_to(root.parent)}:{number}: {word}")
    assert not found, "\n".join(found)


def test_a_module_still_being_imported_reads_as_not_imported(tmp_path: Path,
                                                             monkeypatch) -> None:
    """While one thread imports torch, another (the sampler) must not get the half-built module
    (it has no ``torch.cuda`` yet): ``imported`` answers None until the import has finished."""
    import sys

    from monitoring.imported import imported

    (tmp_path / "halfbuilt_probe_mod.py").write_text(
        "from monitoring.imported import imported\n"
        "import sys\n"
        "SEEN_IN_MODULES = 'halfbuilt_probe_mod' in sys.modules\n"
        "DURING = imported('halfbuilt_probe_mod')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert imported("halfbuilt_probe_mod") is None
    import halfbuilt_probe_mod  # type: ignore[import-not-found]

    try:
        assert halfbuilt_probe_mod.SEEN_IN_MODULES  # sys.modules held it during its import...
        assert halfbuilt_probe_mod.DURING is None  # ...and it read as not imported yet
        assert imported("halfbuilt_probe_mod") is halfbuilt_probe_mod
    finally:
        sys.modules.pop("halfbuilt_probe_mod", None)
