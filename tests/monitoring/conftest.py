"""Shared fixtures of the monitoring tests."""

from __future__ import annotations

import importlib.util
import mmap
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run_python(
    code: str, *, prefix: list[str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    command = [*(prefix or []), sys.executable, "-c", code]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_child_env(),
        cwd=ROOT,
        check=False,
    )


def _load_helper(name: str) -> ModuleType:
    """Import a helper module of this folder by path (works in every pytest import mode)."""
    spec = importlib.util.spec_from_file_location(f"monitoring_tests_{name}", HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_fakes = _load_helper("fake_nvml")


@pytest.fixture
def project_root() -> Path:
    """The repository's root folder."""
    return ROOT


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for a child Python that must import this project's packages."""
    return _child_env()


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_python(code, prefix=None, timeout=60)``: run code in a fresh Python.

    ``prefix`` is a command put in front (e.g. ``unshare ...``); the child can import this
    project's packages and runs in the project root.
    """
    return _run_python


@pytest.fixture
def trimmed_heap() -> None:
    """Give glibc's free heap back before a test that expects an allocation to raise the RSS.

    Earlier tests in the same worker can leave hundreds of MiB freed but resident on glibc's
    lists; a new block is then carved from those pages and the RSS does not move (CI failed
    that way twice). After a trim (what a light cleanup does) every new block faults in fresh
    pages. A block freed again stays resident until the next trim.
    """
    from monitoring import cleanup

    cleanup.light()


def _resident_block(size: int) -> mmap.mmap:
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


@pytest.fixture
def resident_block() -> Callable[[int], mmap.mmap]:
    """``resident_block(size)``: an anonymous mapping of ``size`` bytes, every page written.

    It raises the RSS by its size whatever state glibc's heap is in, and ``close()`` gives
    every page back at once: for tests of RSS figures themselves (a heap block may be carved
    from pages already resident, and stays resident when freed).
    """
    return _resident_block


@pytest.fixture
def fake_nvml() -> type:
    """The fault-injecting NVML stand-in class (see fake_nvml.py for why NVML is faked)."""
    return _fakes.FakeNvml


@pytest.fixture
def fake_gpu() -> type:
    """A pretend GPU for :func:`fake_nvml`."""
    return _fakes.FakeGpu
