"""The OpenAI-compatible routes of a real service (the embedded Piper voice, a token, loopback),
driven by OpenAI's own Python client: speech in every format this libsndfile writes, decoded
and checked; errors raised as the client's exception classes; models, voices, probes."""

from __future__ import annotations

import base64
import io
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from service.audio_formats import available_formats

pytestmark = pytest.mark.slow

TOKEN = "openai-test-token"
TEXT = "Hello there. This is the speech route."


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai")


@pytest.fixture(scope="module")
def served(folder: Path, launch):
    running = launch(folder, "--preload", "--engine", "piper", token=TOKEN)
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture
def client(served) -> openai.OpenAI:  # per test: a restart test moves the service's port
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=TOKEN, max_retries=0,
                         timeout=120)


def check_speech(samples: np.ndarray, rate: int) -> None:
    """Real speech: longer than half a second, not silence."""
    assert len(samples) / rate > 0.5
    assert float(np.sqrt(np.mean(np.square(samples)))) > 0.01
    assert float(np.abs(samples).max()) > 0.1


@pytest.mark.parametrize("fmt", sorted(available_formats()))
def test_speech_in_every_writable_format_is_real_audio(client, fmt: str) -> None:
    answer = client.audio.speech.create(model="piper", voice="alloy", input=TEXT,
                                        response_format=fmt, extra_body={"seed": 4})
    headers = answer.response.headers
    rate = int(headers["x-sample-rate"])
    data = answer.content
    if fmt == "pcm":
        assert headers["content-type"] == "audio/pcm"
        assert rate == 24000 and len(data) % 2 == 0
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32767
        assert len(samples) / rate == pytest.approx(float(headers["x-audio-seconds"]),
                                                    abs=2 / rate)
    else:
        samples, read_rate = sf.read(io.BytesIO(data), dtype="float32")
        assert read_rate == rate
        expected = {"wav": "WAV", "flac": "FLAC", "mp3": "MP3", "opus": "OGG"}[fmt]
        assert sf.info(io.BytesIO(data)).format == expected
        # lossy codecs add or drop a frame's worth of samples at the ends
        assert len(samples) / rate == pytest.approx(float(headers["x-audio-seconds"]), abs=0.1)
    check_speech(samples, rate)
    assert rate == (24000 if fmt in ("pcm", "opus") else 22050)


def test_streaming_response_gives_the_same_audio(client) -> None:
    body = {"model": "tts-1", "voice": "echo", "input": TEXT, "response_format": "wav"}
    with client.audio.speech.with_streaming_response.create(
            **body, extra_body={"seed": 9}) as answer:
        assert answer.status_code == 200
        chunks = list(answer.iter_bytes(4096))
    whole = client.audio.speech.create(**body, extra_body={"seed": 9}).content
    assert len(chunks) > 1 and b"".join(chunks) == whole
    samples, rate = sf.read(io.BytesIO(whole), dtype="float32")
    check_speech(samples, rate)


def test_speed_changes_the_length(client) -> None:
    lengths = {}
    for speed in (0.5, 2.0):
        answer = client.audio.speech.create(model="piper", voice="alloy", input=TEXT,
                                            response_format="wav", speed=speed,
                                            extra_body={"seed": 1})
        lengths[speed] = sf.info(io.BytesIO(answer.content)).duration
    assert lengths[0.5] > 2 * lengths[2.0]


@pytest.mark.parametrize(("change", "param", "words"), [
    ({"response_format": "aac"}, "response_format", "(the formats this machine writes)"),
    ({"speed": 5.0}, "speed", "between 0.25 and 4.0"),
    ({"speed": 3.0}, "speed", "0.5 to 2.0"),
    ({"input": ""}, "input", "empty"),
    ({"input": "?!"}, "input", "no letters or digits"),
    ({"voice": "nobody"}, "voice", "no voice called 'nobody'"),
    ({"stream_format": "sse", "response_format": "mp3"}, "response_format",
     "an sse stream carries pcm or wav"),
    ({"stream_format": "chunks"}, "stream_format", "'audio' or 'sse'"),
    ({"extra_body": {"sample_rate": 8000}}, "sample_rate", "unknown field"),
    ({"extra_body": {"ref_audio": "not base64!"}}, "ref_audio", "base64"),
    ({"extra_body": {"ref_audio": base64.b64encode(b"plain text, no audio").decode()}},
     "ref_audio", "not an audio file"),
])
def test_bad_fields_raise_bad_request_naming_the_field(client, change, param, words) -> None:
    body = {"model": "piper", "voice": "alloy", "input": TEXT, **change}
    if change.get("response_format") == "aac":
        words = ", ".join(available_formats())
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(**body)
    err = caught.value
    assert err.status_code == 400 and err.param == param, err.message
    assert err.type == "invalid_request_error"
    assert words in err.message


def test_input_over_the_limit_is_refused(client, served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="piper", voice="alloy", input="word " * 1001)
    assert caught.value.param == "input" and "limit is 5,000" in caught.value.message


def test_unknown_model_is_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.audio.speech.create(model="twin", voice="alloy", input=TEXT)
    assert caught.value.param == "model" and caught.value.code == "model_not_found"
    assert "serve --engine twin" in caught.value.message


def test_wrong_token_raises_authentication_error(served) -> None:
    for key in ("wrong", ""):
        other = openai.OpenAI(base_url=f"{served.url}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            other.audio.speech.create(model="piper", voice="alloy", input=TEXT)
        assert caught.value.code == "invalid_api_key" and "token" in caught.value.message
    answer = httpx.post(f"{served.url}/v1/audio/speech", json={"model": "piper"})
    assert answer.status_code == 401 and answer.json()["error"]["type"] == (
        "authentication_error")


def test_speech_is_tracked_like_any_synthesis(client, served) -> None:
    with httpx.Client(base_url=served.url, headers=served.headers) as http:
        before = _synthesis_count(http.get("/metrics").text)
        answer = client.audio.speech.create(model="gpt-4o-mini-tts", voice="nova", input=TEXT,
                                            response_format="flac",
                                            instructions="Speak cheerfully.")
        after = _synthesis_count(http.get("/metrics").text)
    event = answer.response.headers["x-synthesis-event"]
    with sqlite3.connect(f"file:{served.db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT kind, ok FROM events WHERE event_id = ?", (event,)).fetchone()
    assert row == ("synthesis", 1)
    assert after == before + 1
    notes = answer.response.headers["x-synthesis-notes"]
    assert "instructions are accepted and ignored" in notes


def _synthesis_count(text: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "glmtts_events_total" and sample.labels.get("kind") == "synthesis"
                    and sample.labels.get("outcome") == "ok"):
                return sample.value
    return 0.0


def test_models_list_names_the_engine(client) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "piper" and {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids)


def test_health_and_ready(served) -> None:
    with httpx.Client(base_url=served.url, headers=served.headers) as http:
        for path in ("/health", "/ready"):
            answer = http.get(path)
            assert answer.status_code == 200, answer.text
            assert answer.json()["engine"] == "piper" and answer.json()["loaded"] is True
            assert http.head(path).status_code == 200
        assert http.get("/ready").json()["status"] == "ready"
        assert httpx.get(f"{served.url}/ready").status_code == 401


def test_ready_answers_before_the_model_loads_and_without_loading_it(tmp_path, launch) -> None:
    lazy = launch(tmp_path / "lazy", "--engine", "piper")
    try:
        with lazy.client() as http:
            body = http.get("/ready").json()
            assert body == {"status": "ready", "engine": "piper", "loaded": False,
                            "reason": None}
            assert http.get("/v1/health").json()["loaded"] is False
    finally:
        assert lazy.stop() == 0, lazy.output()


def _clip(seconds: float = 3.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 220 * t), rate, format="FLAC")
    return buf.getvalue()


def test_voices_register_list_use_delete_and_survive_a_restart(served, client, folder,
                                                               launch) -> None:
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as http:
        made = http.post("/v1/voices", data={"name": "narrator", "text": "A clip of me."},
                         files={"audio": ("me.flac", _clip(), "audio/flac")})
        assert made.status_code == 201, made.text
        assert made.json()["format"] == "FLAC" and made.json()["duration_s"] == 3.0
        assert made.json()["evicted"] == []  # one voice of at most 100
        again = http.post("/v1/voices", data={"name": "narrator", "text": "Again."},
                          files={"audio": ("me.flac", _clip(), "audio/flac")})
        assert again.status_code == 409 and again.json()["error"]["param"] == "name"
        reserved = http.post("/v1/voices", data={"name": "alloy", "text": "Mine."},
                             files={"audio": ("me.flac", _clip(), "audio/flac")})
        assert reserved.status_code == 400 and "built-in" in reserved.json()["error"]["message"]
        junk = http.post("/v1/voices", data={"name": "junk", "text": "Junk."},
                         files={"audio": ("x.wav", b"RIFF not really", "audio/wav")})
        assert junk.status_code == 400 and junk.json()["error"]["param"] == "audio"
        too_long = http.post("/v1/voices", data={"name": "long", "text": "Long."},
                             files={"audio": ("l.flac", _clip(31.0), "audio/flac")})
        assert too_long.status_code == 400 and "30 s" in too_long.json()["error"]["message"]
        assert [v["id"] for v in http.get("/v1/voices").json()["data"]] == ["narrator"]
    answer = client.audio.speech.create(model="piper", voice={"id": "narrator"}, input=TEXT,
                                        response_format="wav")
    check_speech(*sf.read(io.BytesIO(answer.content), dtype="float32"))
    assert "reference_audio is ignored by the piper engine" in answer.response.headers[
        "x-synthesis-notes"]
    assert (folder / "voices" / "narrator" / "voice.json").is_file()

    assert served.stop() == 0, served.output()  # a restart keeps the voice
    restarted = launch(folder, "--engine", "piper", token=TOKEN)
    served.proc, served.url = restarted.proc, restarted.url  # the module's later tests
    with httpx.Client(base_url=served.url, headers=served.headers) as http:
        assert [v["text"] for v in http.get("/v1/voices").json()["data"]] == ["A clip of me."]
        gone = http.delete("/v1/voices/narrator")
        assert gone.status_code == 200 and gone.json() == {
            "id": "narrator", "object": "voice.deleted", "deleted": True}
        assert http.get("/v1/voices").json()["data"] == []
        missing = http.delete("/v1/voices/narrator")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == (
            "voice_not_found")
    assert not (folder / "voices" / "narrator").exists()


def test_one_off_reference_audio_passes_the_gate(served) -> None:
    other = openai.OpenAI(base_url=f"{served.url}/v1", api_key=TOKEN, max_retries=0)
    answer = other.audio.speech.create(
        model="piper", voice="alloy", input=TEXT, response_format="wav",
        extra_body={"ref_audio": base64.b64encode(_clip()).decode(), "ref_text": "A clip."})
    check_speech(*sf.read(io.BytesIO(answer.content), dtype="float32"))
    assert "reference_audio is ignored" in answer.response.headers["x-synthesis-notes"]


def test_a_speech_client_that_leaves_cancels_its_synthesis(served) -> None:
    from monitoring import open_store

    text = " ".join(f"Sentence number {i} of a text nobody will hear." for i in range(60))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{served.url}/v1/audio/speech", headers=served.headers, timeout=1.0,
                   json={"model": "piper", "voice": "alloy", "input": text})
    deadline = time.monotonic() + 30
    found = None
    while found is None and time.monotonic() < deadline:
        store = open_store(served.db)
        events = store.events(kind="synthesis")
        store.close()
        cancelled = events[events["error_type"].fillna("").str.endswith("Cancelled")]
        found = cancelled.iloc[-1] if len(cancelled) else None
        time.sleep(0.2)
    assert found is not None, "no cancelled synthesis was recorded"
    assert "of 60 sentences" in found["error_message"]


FOUR = ("The first sentence is short. The second one is a little longer than that. "
        "Here comes the third. And the fourth ends it.")


def _sse_events(data: bytes) -> list[dict]:
    import json

    blocks = data.decode().split("\n\n")
    assert blocks[-1] == ""
    assert all(b.startswith("data: ") for b in blocks[:-1])
    return [json.loads(b.removeprefix("data: ")) for b in blocks[:-1]]


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_sse_stream_sends_one_delta_per_sentence_then_done(served, client, fmt) -> None:
    body = {"model": "piper", "voice": "alloy", "input": FOUR, "response_format": fmt}
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as http:
        before = _first_audio_count(http.get("/metrics").text, "sse")
        answer = http.post("/v1/audio/speech", json={**body, "stream_format": "sse",
                                                     "seed": 5})
        after = _first_audio_count(http.get("/metrics").text, "sse")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(answer.content)
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 4 + ["speech.audio.done"]
    streamed = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    whole = client.audio.speech.create(**body, extra_body={"seed": 5}).content  # not streamed
    if fmt == "pcm":
        assert streamed == whole
    else:
        a, rate = sf.read(io.BytesIO(streamed), dtype="int16")
        b, rate_b = sf.read(io.BytesIO(whole), dtype="int16")
        assert rate == rate_b == events[-1]["sample_rate"] and np.array_equal(a, b)
    done = events[-1]
    assert done["audio_seconds"] > 0.5 and len(done["event_id"]) == 32
    assert after == before + 1


def _first_audio_count(text: str, stream: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "glmtts_speech_first_audio_seconds_count"
                    and sample.labels.get("stream") == stream):
                return sample.value
    return 0.0


def test_audio_stream_is_a_playable_wav(served) -> None:
    body = {"model": "piper", "voice": "alloy", "input": FOUR, "response_format": "wav",
            "stream_format": "audio"}
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as http:
        answer = http.post("/v1/audio/speech", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    assert answer.headers["transfer-encoding"] == "chunked"
    samples, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
    assert rate == int(answer.headers["x-sample-rate"]) == 22050
    check_speech(samples, rate)


def test_first_audio_arrives_while_the_synthesis_still_runs(served) -> None:
    """Ordering, not timing: with the first delta in hand the service still counts the
    synthesis as running, and leaving then cancels it part-way (so the rest was not made)."""
    from monitoring import open_store

    text = " ".join(f"Sentence number {i} of a long streamed text." for i in range(40))
    body = {"model": "piper", "voice": "alloy", "input": text, "response_format": "pcm",
            "stream_format": "sse"}
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=60) as http:
        with http.stream("POST", "/v1/audio/speech", json=body) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            first = next(line for line in lines if line)
            assert first.startswith('data: {"type": "speech.audio.delta"')
            assert http.get("/v1/health").json()["pending"] == 1
        deadline = time.monotonic() + 30  # the client left after one sentence
        found = None
        while found is None and time.monotonic() < deadline:
            store = open_store(served.db)
            events = store.events(kind="synthesis")
            store.close()
            mine = events[events["label"].str.startswith("Sentence number 0 of a long streamed")]
            found = mine.iloc[-1] if len(mine) else None
            time.sleep(0.2)
        assert found is not None, "no synthesis event was recorded"
        assert found["features"]["outcome"] == "cancelled"
        assert "of 40 sentences" in found["error_message"]
        assert http.get("/v1/health").json()["pending"] == 0
