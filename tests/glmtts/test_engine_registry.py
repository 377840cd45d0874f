"""The engine registry answers the app's first page without the engines' model code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmtts.engines import engine_class, engine_names, engine_status, takes_dtype

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("home", [None, "nowhere"])
def test_engine_status_answers_what_each_engine_class_answers(
        home: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if home is None:
        monkeypatch.delenv("GLMTTS_HOME", raising=False)
    else:
        monkeypatch.setenv("GLMTTS_HOME", str(tmp_path / home))
    assert engine_status() == {name: engine_class(name).unavailable_reason()
                               for name in engine_names()}
    assert engine_status()["glm-tts"] is not None  # no checkout here, and it says so


def test_the_precision_option_list_matches_the_engine_classes() -> None:
    import inspect

    for name in engine_names():
        params = inspect.signature(engine_class(name).__init__).parameters
        assert takes_dtype(name) == ("dtype" in params), name


def test_a_cpu_only_torch_is_told_without_importing_it() -> None:
    import torch

    from glmtts.device import _cpu_only_build

    assert _cpu_only_build() == (torch.version.cuda is None)


def test_listing_and_creating_the_default_engine_imports_no_torch() -> None:
    """What the Synthesize page asks before the first synthesis: every engine's status, the
    default engine created with its capabilities, its device on a CPU-only build. Loading the
    model then imports torch (so the check below can see an import)."""
    code = (
        "import json, sys\n"
        "from glmtts.engines import create_engine, engine_status\n"
        "from glmtts.device import _cpu_only_build, resolve_device\n"
        "from glmtts.audio import wav_bytes\n"
        "import glmtts.engines.glm_tts.checkout, glmtts.session\n"
        "engine_status()\n"
        "engine = create_engine('piper')\n"
        "caps = engine.capabilities\n"
        "if _cpu_only_build():\n"
        "    resolve_device('auto')\n"
        "before = 'torch' in sys.modules\n"
        "engine.load('cpu')\n"
        "print(json.dumps([before, 'torch' in sys.modules, caps.native_sample_rate]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after, rate = json.loads(done.stdout.splitlines()[-1])
    assert (before, after, rate) == (False, True, 22050)
