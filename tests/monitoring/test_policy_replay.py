"""Replay: syntheses of growing length against a fixed GPU capacity, with the policy in the loop.

Nobody acting (advise mode) runs out of memory; acting on required recommendations (auto mode)
finishes without. The GPU is simulated (see :class:`SimulatedGpu`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from monitoring.policy import (
    HistoryEvent,
    Recommendation,
    recommend,
    should_act,
)
from monitoring.records import Change
from monitoring.snapshot import Snapshot


def _helper():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "monitoring_tests_tts_view_replay", Path(__file__).with_name("tts_view.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_view = _helper()
MiB = 1 << 20
GB = 10**9
LENGTHS = tuple(range(50, 1001, 50))  # 20 texts, 50 to 1000 characters
ENGINE = {"engine": "glm-tts", "device": "cuda:0", "sample_rate": 24000}


@dataclass
class SimulatedGpu:
    """A stand-in for a CUDA GPU, which cannot exist on the machines these tests run on.

    It keeps the figures the policy reads, with PyTorch's caching allocator in miniature:

    - ``capacity`` bytes of device memory; the CUDA context takes ``context`` from the first load.
    - A load makes the weights live tensors. A synthesis of ``demand`` bytes (``base`` +
      ``per_char`` x characters) is served from the allocator's cache (reserved, not allocated,
      not fragmented) and the device; when the device has too little, the allocator flushes its
      releasable cache and retries (``num_alloc_retries`` + 1), then raises out-of-memory.
    - After a synthesis the pool stays reserved (the cache), ``retained`` bytes stay live (engine
      caches that only a full cleanup drops) and ``fragmentation`` x demand stays in
      inactive-split blocks (which ``empty_cache()`` cannot return).
    - A light cleanup returns the releasable cache; a full one drops the model, the engine caches
      and the pool, and the next synthesis reloads (``load_s`` seconds, on the event only).
    """

    capacity: int = 23028 * MiB  # an A10G "24 GB"
    context: int = 520 * MiB
    weights: int = 6_620_000_000
    base: int = 600_000_000  # KV cache on: ~1.2 GB for a 50-character text
    per_char: int = 12_000_000
    retained: int = 150_000_000
    fragmentation: float = 0.2
    load_s: float = 11.8
    loaded: bool = False
    started: bool = False
    allocated: int = 0
    reserved: int = 0
    split: int = 0
    retries: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def process(self) -> int:
        return self.reserved + (self.context if self.started else 0)

    @property
    def free(self) -> int:
        return self.capacity - self.process

    def demand(self, chars: int) -> int:
        return self.base + self.per_char * chars + (chars * 7919) % (4 * MiB)  # small jitter

    def snapshot(self) -> Snapshot:
        return Snapshot(
            monotonic_s=0.0, wall_s=0.0, gpu_index=0, nvml_device_total_bytes=self.capacity,
            nvml_device_used_bytes=self.process, nvml_device_free_bytes=self.free,
            nvml_process_used_bytes=self.process, torch_allocated_bytes=self.allocated,
            torch_reserved_bytes=self.reserved, torch_active_bytes=self.allocated,
            torch_inactive_split_bytes=self.split, torch_num_alloc_retries=self.retries)

    def _figures(self) -> dict[str, int]:
        return {"torch_allocated": self.allocated, "torch_reserved": self.reserved,
                "torch_inactive_split": self.split, "nvml_process": self.process,
                "nvml_device": self.process}

    def _event(self, kind: str, before: dict[str, int], features: dict[str, object], *,
               duration_s: float, peaks: dict[str, int] | None = None,
               retries: tuple[int, int] | None = None, oom: bool = False) -> HistoryEvent:
        after = self._figures()
        changes = {name: Change(before[name], after[name], (peaks or {}).get(name))
                   for name in before}
        first, last = retries or (None, None)
        return HistoryEvent(kind=kind, ok=not oom, oom=oom, duration_s=duration_s,
                            features=features, alloc_retries_before=first,
                            alloc_retries_after=last, **changes)

    def load(self) -> HistoryEvent:
        before = self._figures()
        self.started = self.loaded = True
        self.allocated = self.reserved = self.weights
        self.split = 0
        self.log.append("load")
        return self._event("load", before, {"engine": "glm-tts", "device": "cuda:0",
                                            "weights_bytes": self.weights},
                           duration_s=self.load_s)

    def cleanup(self, level: str) -> HistoryEvent:
        before = self._figures()
        if level == "full":
            self.loaded = False
            self.allocated = self.reserved = self.split = 0
        else:
            self.reserved = self.allocated + self.split
        self.log.append(level)
        return self._event("cleanup", before, {"level": level}, duration_s=0.3)

    def synthesize(self, chars: int) -> HistoryEvent:
        assert self.loaded
        before, retries = self._figures(), self.retries
        features = {**ENGINE, "text_chars": chars, "use_kv_cache": True, "voice": None,
                    "reference_audio": None}
        demand = self.demand(chars)
        cached = self.reserved - self.allocated - self.split
        extra = max(0, demand - cached)
        if extra > self.free:
            self.retries += 1
            self.reserved -= cached  # the allocator flushes its cache and retries
            extra = demand
            if extra > self.free:
                self.log.append(f"OOM at {chars}")
                return self._event("synthesis", before, features, duration_s=0.5,
                                   retries=(retries, self.retries), oom=True)
        self.reserved += extra
        peaks = {"torch_allocated": self.allocated + demand, "torch_reserved": self.reserved}
        self.allocated += self.retained
        self.split = min(self.split + int(self.fragmentation * demand),
                         self.reserved - self.allocated)
        self.log.append(f"ok {chars}")
        return self._event("synthesis", before, features, duration_s=chars * 0.1, peaks=peaks,
                           retries=(retries, self.retries))


@dataclass
class Replay:
    gpu: SimulatedGpu
    history: list[HistoryEvent]
    recommendations: list[Recommendation]

    @property
    def ooms(self) -> list[int]:
        return [i for i, e in enumerate(e for e in self.history if e.kind == "synthesis")
                if e.oom]

    @property
    def cleanups(self) -> list[str]:
        return [str(e.features["level"]) for e in self.history if e.kind == "cleanup"]


def replay(mode: str) -> Replay:
    """Speak every text of :data:`LENGTHS` once, asking the policy first (a session's loop)."""
    gpu, history, recs = SimulatedGpu(), [], []
    settings = _view.settings(mode=mode)
    for chars in LENGTHS:
        pending = _view.pending(**ENGINE, text_chars=chars, use_kv_cache=True)
        rec = recommend(gpu.snapshot(), history, pending, settings)
        recs.append(rec)
        if should_act(rec):
            history.append(gpu.cleanup(rec.action))
        if not gpu.loaded:
            history.append(gpu.load())
        history.append(gpu.synthesize(chars))
    return Replay(gpu, history, recs)


@pytest.mark.parametrize("mode", ["advise", "off"])
def test_nobody_acting_runs_out_of_memory(mode: str) -> None:
    run = replay(mode)
    assert run.ooms, run.gpu.log
    assert run.cleanups == []
    if mode == "advise":  # the policy saw it coming: a required full cleanup before the first OOM
        first = run.recommendations[run.ooms[0]]
        assert (first.action, first.urgency) == ("full", "required"), first.reasons


def test_acting_on_required_recommendations_never_runs_out() -> None:
    run = replay("auto")
    assert not run.ooms, run.gpu.log
    assert "full" in run.cleanups
    assert sum(1 for e in run.history if e.kind == "synthesis" and e.ok) == len(LENGTHS)
    acted = [r for r in run.recommendations if r.should_act]
    assert len(acted) == len(run.cleanups)
    assert all(r.urgency == "required" for r in acted)
    # it cleans when needed, not every few syntheses (the folklore): fewer cleanups than texts
    assert len(run.cleanups) < len(LENGTHS) // 2


def test_the_simulator_frees_what_it_should() -> None:
    gpu = SimulatedGpu()
    gpu.load()
    gpu.synthesize(200)
    cached = gpu.reserved - gpu.allocated - gpu.split
    assert cached > 0 and gpu.split > 0 and gpu.allocated == gpu.weights + gpu.retained
    free = gpu.free
    gpu.cleanup("light")
    assert gpu.free == free + cached and gpu.allocated == gpu.weights + gpu.retained
    gpu.cleanup("full")
    assert gpu.free == gpu.capacity - gpu.context and not gpu.loaded
