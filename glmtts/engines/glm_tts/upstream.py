"""Running upstream GLM-TTS code from its checkout without leaking it into the app.

Upstream opens files by paths relative to its root (``ckpt/...``, ``frontend/...``,
``./configs/custom_replace.jsonl`` on every Chinese text) and imports its modules as top-level
packages (``utils``, ``llm``, ``flow``, ``cosyvoice``, ``glmtts_inference``). So its code runs only
inside :meth:`Checkout.entered`, which

- takes one process-wide lock (the working directory is process state: two threads may not
  change it at once; the lock is re-entrant so a reload inside a synthesis can nest),
- puts the checkout first on ``sys.path`` and makes it the working directory,
- and restores both on the way out, whatever happens.

Upstream's modules stay in ``sys.modules`` while at least one engine uses the checkout (code
inside them imports lazily); the last :meth:`Checkout.release` removes every module loaded from
the checkout. Importing refuses, with a clear error, when a module of the same top-level name
from elsewhere is already imported (another checkout, or an unrelated ``utils`` package).
Importing ``glmtts_inference`` calls ``logging.basicConfig``; the root logger's handlers and level
are put back afterwards, since a library must not configure the app's logging.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from glmtts.engines.glm_tts.errors import UpstreamError

log = logging.getLogger(__name__)

#: Top-level names the adapter's imports of upstream (c5dc7ae) pull in.
TOP_LEVEL = ("glmtts_inference", "cosyvoice", "utils", "llm", "flow")
#: Upstream's module globals caching STFT tensors: ``mel_basis`` keyed by fmax + device,
#: ``hann_window`` keyed by device only (so a window of the previous size is reused).
MEL_GLOBALS = ("mel_basis", "hann_window")

_LOCK = threading.RLock()
_STATES: dict[str, _State] = {}


@dataclass
class _State:
    """Process-wide bookkeeping of one checkout."""

    users: int = 0
    modules: dict[str, ModuleType] = field(default_factory=dict)
    #: Output rate the STFT caches were last filled for (None: empty or unknown).
    mel_rate: int | None = None


@dataclass(frozen=True)
class Modules:
    """The upstream modules the adapter calls."""

    inference: ModuleType  # glmtts_inference: load_models, generate_long, DEVICE
    audio: ModuleType  # utils.audio: mel_spectrogram, mel_basis, hann_window
    tts_model_util: ModuleType  # utils.tts_model_util: Token2Wav


def _is_under(module: ModuleType, root: str) -> bool:
    prefix = root + os.sep
    file = getattr(module, "__file__", None)
    if file:
        return str(file).startswith(prefix)
    return any(p.startswith(prefix) or p == root for p in _search_paths(module))


def _search_paths(module: ModuleType) -> list[str]:
    """A package's ``__path__`` entries (namespace packages, like upstream's ``llm/``, have no
    ``__file__``); [] for plain modules and for objects whose ``__path__`` is not a list of
    folders (``torch.classes`` has one of those)."""
    paths = getattr(module, "__path__", None)
    if paths is None or isinstance(paths, (str, bytes)):
        return []
    try:
        return [str(p) for p in paths]
    except TypeError:
        return []


def _origin(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    if file:
        return str(file)
    paths = _search_paths(module)
    return paths[0] if paths else "a built-in or unknown location"


class Checkout:
    """One upstream checkout as a source of modules, isolated from the rest of the process."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._root = str(home)
        self._acquired = False

    @property
    def state(self) -> _State:
        with _LOCK:
            return _STATES.setdefault(self._root, _State())

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run upstream code: checkout first on ``sys.path`` and as the working directory;
        both restored on exit. Holds the process-wide lock throughout."""
        with _LOCK:
            old_cwd = os.getcwd()
            added = self._root not in sys.path
            if added:
                sys.path.insert(0, self._root)
            try:
                os.chdir(self._root)
                yield
            finally:
                os.chdir(old_cwd)
                if added and self._root in sys.path:
                    sys.path.remove(self._root)

    def acquire(self) -> Modules:
        """Import upstream's modules (or reuse those another engine imported) and count this
        engine as a user. Call inside :meth:`entered`; pair with :meth:`release`.

        Raises:
            UpstreamError: a same-named module from elsewhere is imported, or importing failed
                (a missing dependency, a broken checkout).
        """
        with _LOCK:
            state = self.state
            if not self._acquired:
                self._check_conflicts()
                try:
                    modules = self._import()
                except ImportError as exc:
                    self._forget_if_unused()
                    raise UpstreamError(
                        f"importing GLM-TTS from {self.home} failed: {exc}; install its "
                        f"requirements (pip install -r {self.home}/requirements.txt)") from exc
                except Exception as exc:  # upstream's import-time code may raise anything
                    self._forget_if_unused()
                    raise UpstreamError(f"importing GLM-TTS from {self.home} failed: "
                                        f"{type(exc).__name__}: {exc}") from exc
                state.users += 1
                self._acquired = True
                self._remember(state)
                return modules
            return self._import()

    def release(self) -> None:
        """Stop counting this engine; the last user removes upstream's modules from
        ``sys.modules`` (idempotent)."""
        with _LOCK:
            if not self._acquired:
                return
            self._acquired = False
            state = self.state
            state.users -= 1
            self._forget_if_unused()

    def reset_mel_cache(self, modules: Modules, rate: int | None) -> int:
        """Empty upstream's STFT caches (in place: other references to the dicts see it) and
        note which rate will fill them next; return how many cached tensors were dropped."""
        dropped = 0
        for name in MEL_GLOBALS:
            cache = getattr(modules.audio, name, None)
            if isinstance(cache, dict):
                dropped += len(cache)
                cache.clear()
            else:
                log.warning("upstream utils.audio has no dict %r: nothing to reset", name)
        with _LOCK:
            self.state.mel_rate = rate
        return dropped

    def mel_cache_matches(self, rate: int) -> bool:
        """Whether upstream's STFT caches were filled for ``rate`` (process-wide: another engine
        on the same checkout may have used the other rate since)."""
        with _LOCK:
            return self.state.mel_rate == rate

    # ------------------------------------------------------------------ internals
    def _check_conflicts(self) -> None:
        for name in TOP_LEVEL:
            module = sys.modules.get(name)
            if module is None or _is_under(module, self._root):
                continue
            other = next((root for root, st in _STATES.items()
                          if root != self._root and st.users and name in st.modules), None)
            if other is not None:
                raise UpstreamError(f"another GLM-TTS checkout ({other}) is loaded in this "
                                    f"process: unload it (full cleanup) before using "
                                    f"{self.home}")
            raise UpstreamError(
                f"a module named {name!r} from {_origin(module)} is already imported, and "
                f"GLM-TTS's own {name!r} would clash with it: run GLM-TTS in a process that "
                f"does not import it")

    def _import(self) -> Modules:
        root_logger = logging.getLogger()
        handlers, level = root_logger.handlers[:], root_logger.level
        try:
            return Modules(inference=importlib.import_module("glmtts_inference"),
                           audio=importlib.import_module("utils.audio"),
                           tts_model_util=importlib.import_module("utils.tts_model_util"))
        finally:
            root_logger.handlers[:] = handlers
            root_logger.setLevel(level)

    def _remember(self, state: _State) -> None:
        state.modules.update({name: mod for name, mod in list(sys.modules.items())
                              if mod is not None and _is_under(mod, self._root)})

    def _forget_if_unused(self) -> None:
        state = _STATES.get(self._root)
        if state is not None and state.users > 0:
            return
        forget_modules(self._root)
        _STATES.pop(self._root, None)


def modules_under(root: str | Path) -> list[str]:
    """Names of the modules in ``sys.modules`` loaded from ``root`` (namespace packages
    included), children before parents."""
    root = str(root)
    names = [name for name, module in list(sys.modules.items())
             if module is not None and _is_under(module, root)]
    return sorted(names, key=lambda name: (-name.count("."), name))


def forget_modules(root: str | Path) -> int:
    """Remove every module loaded from ``root`` from ``sys.modules``; return how many.

    The whole set is decided first, while every parent package is still present (a namespace
    subpackage reads its parent to list its own path), then children go before parents. Never
    raises for a module that is already gone."""
    names = modules_under(root)
    for name in names:
        sys.modules.pop(name, None)
    sys.path_importer_cache.pop(str(root), None)
    return len(names)


def loaded_checkouts() -> dict[str, int]:
    """Checkout path -> number of engines using it, for diagnostics."""
    with _LOCK:
        return {root: st.users for root, st in _STATES.items() if st.users}

