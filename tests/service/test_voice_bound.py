"""The voice registry is bounded: past its maximum, registering removes the oldest voice
and says which (real files on disk, the same gate as uploads)."""

from __future__ import annotations

from pathlib import Path

from service.voices import MAX_VOICES, VoiceStore


def test_registering_past_the_bound_evicts_the_oldest(tmp_path: Path, make_wav) -> None:
    store = VoiceStore(tmp_path / "voices", max_voices=3)
    clip = make_wav(2.5, 16000)
    first = [store.register(f"v{i}", f"clip {i}", clip) for i in range(3)]
    assert [v.evicted for v in first] == [(), (), ()]
    fourth = store.register("v3", "clip 3", clip)
    assert fourth.evicted == ("v0",)
    assert [v.name for v in store.list()] == ["v1", "v2", "v3"]
    assert store.get("v0") is None and not (tmp_path / "voices" / "v0").exists()
    fifth = store.register("v4", "clip 4", clip)
    assert fifth.evicted == ("v1",)
    assert [v.name for v in store.list()] == ["v2", "v3", "v4"]
    # what is stored does not carry the eviction note
    assert "evicted" not in (tmp_path / "voices" / "v4" / "voice.json").read_text()
    assert store.get("v4").evicted == ()
    assert MAX_VOICES == 100 and VoiceStore(tmp_path / "other").max_voices == MAX_VOICES
