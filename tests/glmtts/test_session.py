"""The synthesis session with the real engine, a real SQLite store and real probes."""

from __future__ import annotations

import dataclasses
import gc
import threading
from pathlib import Path

import pytest

from glmtts.errors import OutOfMemoryError
from glmtts.registry import loaded_models
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring import open_store


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(tmp_path / "events.sqlite3")
    yield s
    s.close()


def test_lazy_load_then_warm(store) -> None:
    session = SynthesisSession(store=store, label="lazy")
    assert not session.loaded
    first = session.synthesize(SynthesisRequest(text="First one.", seed=1))
    second = session.synthesize(SynthesisRequest(text="Second one.", seed=1))
    assert first.load is not None and first.load.kind == "load" and first.load.ok
    assert first.load.features["weights_bytes"] > 60_000_000
    assert second.load is None
    assert first.record.kind == "synthesis" and first.record.features["text_chars"] == 10
    assert first.record.breakdown.host_rss.before_bytes > 0
    kinds = list(store.events(session_id=session.session_id)["kind"])
    assert kinds == ["load", "synthesis", "synthesis"]
    session.close()


def test_full_cleanup_unloads_and_next_synthesis_reloads(store) -> None:
    session = SynthesisSession(store=store)
    session.synthesize(SynthesisRequest(text="Load me.", seed=1))
    result = session.cleanup("full")
    assert not session.loaded
    assert result.level == "full" and result.duration_s > 0
    again = session.synthesize(SynthesisRequest(text="Load me.", seed=1))
    assert again.load is not None
    light = session.cleanup("light")
    assert session.loaded and light.level == "light"
    with pytest.raises(ValueError, match="light"):
        session.cleanup("medium")
    session.close()


def test_registry_counts_models_of_live_sessions(store) -> None:
    before = len(loaded_models())
    a, b = SynthesisSession(store=store, label="a"), SynthesisSession(store=store, label="b")
    a.synthesize(SynthesisRequest(text="One.", seed=1))
    b.synthesize(SynthesisRequest(text="Two.", seed=1))
    labels = {m.session_label for m in loaded_models()}
    assert {"a", "b"} <= labels and len(loaded_models()) == before + 2
    a.cleanup("full")
    assert len(loaded_models()) == before + 1
    del b
    gc.collect()
    assert len(loaded_models()) == before
    a.close()


def test_device_lock_serialises_sessions(store) -> None:
    sessions = [SynthesisSession(store=store, label=f"s{i}") for i in range(2)]
    for s in sessions:
        s.synthesize(SynthesisRequest(text="Warm.", seed=0))
    records = []

    def run(s: SynthesisSession) -> None:
        records.append(s.synthesize(SynthesisRequest(text="At the same time, please.",
                                                     seed=3)).record)

    threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    first, second = sorted(records, key=lambda r: r.started_monotonic_s)
    assert first.started_monotonic_s + first.duration_s <= second.started_monotonic_s + 1e-3


def test_out_of_memory_is_recovered_by_cleanup_and_retry(store) -> None:
    """CPU stand-in for a GPU out-of-memory: the test engine's switch (tests/fault_engines)."""
    session = SynthesisSession("tests.fault_engines:FaultyPiper", store=store)
    session.synthesize(SynthesisRequest(text="Warm.", seed=0))
    session.engine.inject_oom("overflow")
    outcome = session.synthesize(SynthesisRequest(text="This will overflow once.", seed=2))
    assert len(outcome.attempts) == 2
    assert outcome.attempts[0].oom and not outcome.attempts[0].ok
    assert outcome.attempts[1].ok
    assert outcome.recovery and "full cleanup freed" in outcome.recovery
    assert outcome.load is not None  # the retry reloaded the model
    kinds = list(store.events(session_id=session.session_id)["kind"])
    assert kinds[-4:] == ["synthesis", "cleanup", "load", "synthesis"]
    session.close()


def test_out_of_memory_twice_is_a_clear_error(store) -> None:
    """CPU stand-in for a GPU out-of-memory: the test engine's switch, twice."""
    session = SynthesisSession("tests.fault_engines:FaultyPiper", store=store)
    session.engine.inject_oom("twice")
    session.engine.inject_oom("twice")
    with pytest.raises(OutOfMemoryError, match="ran out of memory again"):
        session.synthesize(SynthesisRequest(text="Fail twice.", seed=2))
    events = store.events(session_id=session.session_id, kind="synthesis")
    assert list(events["oom"]) == [True, True]
    session.close()


def test_no_recovery_when_asked(store) -> None:
    session = SynthesisSession("tests.fault_engines:FaultyPiper", store=store)
    session.engine.inject_oom()
    with pytest.raises(OutOfMemoryError, match="out of memory"):
        session.synthesize(SynthesisRequest(text="No retry.", seed=2), recover=False)
    session.close()


def test_other_errors_are_recorded_and_raised(store) -> None:
    session = SynthesisSession(store=store)
    with pytest.raises(Exception, match="cannot produce 16000 Hz"):
        session.synthesize(SynthesisRequest(text="Bad rate.", sample_rate=16000))
    session.close()


def test_auto_mode_runs_a_required_cleanup_first(store) -> None:
    session = SynthesisSession(store=store, policy_mode="auto")
    # As an engine would declare that caches DSP tables per device only: a sample-rate switch
    # makes its state stale (Piper declares nothing of the kind).
    switch = (("sample_rate", "full", "tables of the old rate would be reused"),)
    settings = dataclasses.replace(session.policy_settings(), switch_rules=switch)
    session.policy_settings = lambda: settings  # type: ignore[method-assign]
    first = session.synthesize(SynthesisRequest(text="At the native rate.", seed=1))
    assert first.auto_cleanup is None and first.recommendation is not None
    second = session.synthesize(SynthesisRequest(text="Now at 24 kHz.", seed=1,
                                                 sample_rate=24000))
    assert second.recommendation.urgency == "required"
    assert second.auto_cleanup is not None and second.auto_cleanup.level == "full"
    assert second.load is not None  # the model reloaded after the cleanup
    kinds = list(store.events(session_id=session.session_id)["kind"])
    assert kinds[-4:] == ["recommendation", "cleanup", "load", "synthesis"]
    session.close()


def test_advise_mode_only_recommends(store) -> None:
    session = SynthesisSession(store=store)
    switch = (("sample_rate", "full", "tables of the old rate would be reused"),)
    settings = dataclasses.replace(session.policy_settings(), switch_rules=switch)
    session.policy_settings = lambda: settings  # type: ignore[method-assign]
    session.synthesize(SynthesisRequest(text="Native.", seed=1))
    out = session.synthesize(SynthesisRequest(text="Resampled.", seed=1, sample_rate=32000))
    assert out.recommendation.action == "full" and out.auto_cleanup is None
    assert out.load is None
    session.close()


@pytest.mark.gpu
def test_real_cuda_out_of_memory_is_recovered_by_cleanup_and_retry(store) -> None:
    """A real ``torch.cuda.OutOfMemoryError`` (a per-process memory cap), recovered in-process:
    the first attempt fails, the full cleanup releases an engine-level cache (a ballast tensor
    the engine drops on unload), and the retry fits."""
    import torch

    session = SynthesisSession(store=store, device="cuda", policy_mode="off")
    session.synthesize(SynthesisRequest(text="Load on the GPU first.", seed=1))
    engine = session.engine
    total = torch.cuda.get_device_properties(0).total_memory
    used = torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 1536 * 2**20) / total))
    try:
        free_in_cap = used + 1536 * 2**20 - torch.cuda.memory_allocated()
        ballast = torch.empty(max(0, free_in_cap - 32 * 2**20), dtype=torch.uint8,
                              device="cuda")
        original_unload = engine.unload

        def unload_with_cache() -> None:
            nonlocal ballast
            ballast = None  # the engine cache a full cleanup drops
            original_unload()

        engine.unload = unload_with_cache  # type: ignore[method-assign]
        text = "A sentence long enough to need more than the few megabytes left. " * 4
        outcome = session.synthesize(SynthesisRequest(text=text, seed=2))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert outcome.attempts[0].oom and outcome.attempts[1].ok
    assert "succeeded" in outcome.recovery
    again = session.synthesize(SynthesisRequest(text="Still alive.", seed=3))
    assert again.result.duration_s > 0
    session.close()


def test_the_policy_reads_what_the_engine_declares() -> None:
    """The session describes requests to the generic policy from the engine's capabilities:
    the size feature, the switch rules and the lighter request (none for Piper)."""
    session = SynthesisSession()
    settings = session.policy_settings()
    assert (settings.size_feature, settings.size_unit) == ("text_chars", "characters")
    assert settings.switch_rules == () and settings.lighter == ()
    assert not settings.restart_available
    pending = session.pending(SynthesisRequest(text="Twelve chars", sample_rate=24000))
    assert pending.size == 12 and dict(pending.features)["sample_rate"] == 24000
    assert session.lighter(SynthesisRequest(text="hello")) is None
    session.close()


def test_a_cancelled_synthesis_stops_between_sentences_and_is_recorded(store) -> None:
    import threading

    from glmtts.cancel import Cancelled, cancellable

    session = SynthesisSession(store=store, policy_mode="off")
    flag = threading.Event()
    flag.set()  # cancelled before the first sentence
    with cancellable(flag), pytest.raises(Cancelled, match="after 0 of 2 sentences"):
        session.synthesize(SynthesisRequest(text="One sentence. And another one.", seed=1))
    event = store.events(kind="synthesis", session_id=session.session_id).iloc[-1]
    assert event["features"]["outcome"] == "cancelled"
    assert session.synthesize(SynthesisRequest(text="Not cancelled.", seed=1)).record.ok
    session.close()


def test_advice_after_the_first_synthesis_uses_it_and_its_figures_add_up() -> None:
    """The sentence a reader gets: one predicted peak with its bound, then what the request
    takes from free memory and why that differs (margin, memory already held and reused); the
    figures in it add up. After the first synthesis the advice always uses it."""
    import re

    from monitoring import open_store

    def mib(text: str) -> float:
        value, unit = text.split()
        return float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]

    session = SynthesisSession("piper", device="cpu", store=open_store(":memory:"))
    try:
        first = session.recommend(SynthesisRequest(text="The first one."), record=False)
        assert first.reasons[0].rule == "headroom.unknown"
        session.synthesize(SynthesisRequest(text="Hello there, this is the first one.", seed=1))
        advice = session.recommend(SynthesisRequest(text="And a second sentence follows."),
                                   record=False)
        # other reasons may join it (e.g. memory glibc holds free, after earlier tests in this
        # process): the headroom reason is the one about this request
        (reason,) = [r for r in advice.reasons if r.rule.startswith("headroom.")]
        assert reason.rule == "headroom.fits", reason.text
        size = r"([\d.]+ [KMG]iB)"
        found = re.search(rf"predicted peak {size} \(at most {size}\).*It takes {size} of the "
                          rf"{size} free in RAM \(the upper bound plus the 10% safety margin, "
                          rf"{size}(?:; less {size} this process already holds unused and "
                          rf"reuses)?\), so it fits\.", reason.text)
        assert found, reason.text
        peak, upper, takes, _free, demand, reused = found.groups()
        assert mib(peak) <= mib(upper) and abs(mib(demand) - 1.1 * mib(upper)) < 1
        assert abs(mib(takes) - (mib(demand) - (mib(reused) if reused else 0))) < 1
        assert advice.needed_bytes is not None and abs(advice.needed_bytes / 2**20 -
                                                       mib(takes)) < 1
    finally:
        session.close()
