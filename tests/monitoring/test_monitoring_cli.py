"""``python -m monitoring snapshot``: JSON that works without a GPU."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from monitoring.cli import main

RunPython = Callable[..., subprocess.CompletedProcess[str]]


def test_snapshot_command_prints_json(run_python: RunPython) -> None:
    done = run_python("import runpy; runpy.run_module('monitoring', run_name='__main__')")
    assert done.returncode != 0  # no sub-command: argparse usage error
    done = run_python(
        "import sys; sys.argv = ['monitoring', 'snapshot']; "
        "import runpy; runpy.run_module('monitoring', run_name='__main__')"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["host_rss_bytes"] > 0
    assert data["torch_reason"].startswith("torch is not imported")
    if data["nvml_device_used_bytes"] is None:
        assert data["nvml_reason"]


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "--indent", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "system_available_bytes" in json.loads(out)
