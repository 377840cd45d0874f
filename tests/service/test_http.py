"""The running service over loopback HTTP: synthesis, cleanup, memory, metrics, bad input."""

from __future__ import annotations

import base64
import io
import json
import re
import sqlite3

import pytest
import soundfile as sf

pytestmark = pytest.mark.slow


def stored_events(db) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0]: (row[1], row[2]) for row in
                conn.execute("SELECT event_id, kind, ok FROM events")}


def test_synthesize_returns_a_playable_wav_with_its_record(service, client) -> None:
    response = client.post("/v1/synthesize", json={"text": "Hello there.", "seed": 3})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == int(response.headers["x-sample-rate"]) == 22050
    assert len(audio) / rate == pytest.approx(float(response.headers["x-audio-seconds"]),
                                              abs=1e-3)
    assert 0.2 < len(audio) / rate < 5 and abs(audio).max() > 0.01
    event = response.headers["x-synthesis-event"]
    assert re.fullmatch(r"[0-9a-f]{32}", event)
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-synthesis-id"])
    assert response.headers["x-seed"] == "3"
    assert int(response.headers["x-host-rss-peak-bytes"]) > 50_000_000
    assert float(response.headers["x-rtf"]) > 0
    assert stored_events(service.db)[event] == ("synthesis", 1)


def test_json_variant_and_seeded_audio_is_repeatable(client) -> None:
    body = {"text": "Same seed.", "seed": 11, "speed": 1.2}
    first = client.post("/v1/synthesize", params={"format": "json"}, json=body)
    second = client.post("/v1/synthesize", params={"format": "json"}, json=body)
    assert first.status_code == second.status_code == 200, first.text
    one, two = first.json(), second.json()
    assert one["record"]["seed"] == 11 and one["record"]["engine"].endswith("FaultyPiper")
    assert one["record"]["event_id"] == first.headers["x-synthesis-event"]
    assert one["record"]["memory"]["host_rss"]["before_bytes"] > 0
    wav_one = base64.b64decode(one["audio"]["base64"])
    assert len(wav_one) == one["audio"]["bytes"]
    assert wav_one == base64.b64decode(two["audio"]["base64"])
    assert sf.info(io.BytesIO(wav_one)).samplerate == one["record"]["sample_rate"]


def test_resampled_rate_and_ignored_knobs_are_noted(client) -> None:
    response = client.post("/v1/synthesize", json={"text": "At 24 kHz.", "sample_rate": 24000,
                                                    "use_kv_cache": True,
                                                    "sampling_method": "topk"})
    assert response.status_code == 200, response.text
    assert sf.info(io.BytesIO(response.content)).samplerate == 24000
    notes = json.loads(response.headers["x-synthesis-notes"])
    assert any(n.startswith("use_kv_cache is ignored") for n in notes)
    assert any(n.startswith("sampling_method is ignored") for n in notes)


def test_multipart_variant_takes_reference_audio(client, make_wav) -> None:
    response = client.post("/v1/synthesize", data={"text": "With a clip.", "seed": "5",
                                                   "reference_text": "A clip."},
                           files={"reference_audio": ("ref.wav", make_wav(), "audio/wav")})
    assert response.status_code == 200, response.text
    assert sf.info(io.BytesIO(response.content)).frames > 0
    notes = json.loads(response.headers["x-synthesis-notes"])
    assert any("reference_audio is ignored by the" in n and "engine" in n for n in notes)


def test_text_cleanup_is_reported(client) -> None:
    response = client.post("/v1/synthesize", params={"format": "json"},
                           json={"text": "Tab\there\x07 ok"})
    assert response.status_code == 200, response.text
    assert response.json()["record"]["notes"] == ["removed 1 control character(s)"]


BAD_JSON = [
    ({"text": ""}, "text", "the text is empty"),
    ({"text": "   \n\t "}, "text", "the text is empty"),
    ({"text": "!!! ..."}, "text", "nothing to speak"),
    ({"text": "x" * 25}, "text", "the limit is 24 per request"),
    ({"text": 5}, "text", "text must be a string"),
    ({"text": None}, "text", "text must be a string"),
    ({}, "text", "'text' is required"),
    ({"text": "Hi.", "seed": "1"}, "seed", "seed must be a whole number"),
    ({"text": "Hi.", "seed": -1}, "seed", "the seed must be between 0 and"),
    ({"text": "Hi.", "seed": 2**64}, "seed", "the seed must be between 0 and"),
    ({"text": "Hi.", "seed": 1.5}, "seed", "seed must be a whole number"),
    ({"text": "Hi.", "seed": 1e300}, "seed", "the seed must be between 0 and"),
    ({"text": "Hi.", "speed": 9}, "speed", "the speed must be between 0.5 and 2.0"),
    ({"text": "Hi.", "speed": True}, "speed", "speed must be a number"),
    ({"text": "Hi.", "speed": "fast"}, "speed", "speed must be a number"),
    ({"text": "Hi.", "use_kv_cache": "yes"}, "use_kv_cache", "must be true or false"),
    ({"text": "Hi.", "sampling_method": "beam"}, "sampling_method", "unknown sampling method"),
    ({"text": "Hi.", "sample_rate": 12345}, "sample_rate", "piper cannot produce 12345 Hz"),
    ({"text": "Hi.", "sample_rate": 0}, "sample_rate", "positive whole number"),
    ({"text": "Hi.", "reference_text": "y" * 25}, "reference_text", "the limit is 24"),
    ({"text": "Hi.", "colour": "blue"}, "colour", "unknown field 'colour'"),
    ({"text": "Hi.", "voice": "/etc/passwd"}, "voice", "chosen when the service starts"),
    ({"text": "Hi.", "reference_audio": "/etc/passwd"}, "reference_audio", "unknown field"),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD_JSON,
                         ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_JSON)])
def test_bad_json_fields_get_422_with_the_page_message(client, body, field, words) -> None:
    response = client.post("/v1/synthesize", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field
    assert words in error["error"]


@pytest.mark.parametrize(("content", "content_type", "status", "words"), [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"\xff\xfe", "application/json", 400, "not valid JSON"),
    (b"[1, 2]", "application/json", 422, "must be a JSON object"),
    (b'"Hello"', "application/json", 422, "must be a JSON object"),
    (b"text=hello", "application/x-www-form-urlencoded", 415, "application/json"),
    (b"hello", "text/plain", 415, "application/json"),
    (b"hello", None, 415, "application/json"),
    (b'{"text": "' + b"a" * 300_000 + b'"}', "application/json", 413, "larger than the limit"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x", 422, "is required"),
    (b"hello", "multipart/form-data", 400, ""),
])
def test_unreadable_bodies_get_4xx(client, content, content_type, status, words) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/synthesize", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_bad_uploads_get_4xx(service, client, make_wav) -> None:
    def post(files, data=None):
        return client.post("/v1/synthesize", data=data or {"text": "Hi."}, files=files)

    not_audio = post({"reference_audio": ("x.wav", b"RIFF but not really audio", "audio/wav")})
    assert not_audio.status_code == 422 and not_audio.json()["field"] == "reference_audio"
    assert "not an audio file this app can read" in not_audio.json()["error"]
    empty = post({"reference_audio": ("x.wav", b"", "audio/wav")})
    assert empty.status_code == 422 and "empty" in empty.json()["error"]
    huge = post({"reference_audio": ("x.wav", b"\0" * (service.max_upload + 1), "audio/wav")})
    assert huge.status_code == 413 and "larger than the limit" in huge.json()["error"]
    two = post({"reference_audio": ("a.wav", make_wav(), "audio/wav"),
                "other": ("b.wav", make_wav(), "audio/wav")})
    assert two.status_code == 400, two.text
    as_file = post({"text": ("t.txt", b"Hello", "text/plain")}, data={})
    assert as_file.status_code == 422 and as_file.json()["field"] == "text"
    typed = post({"reference_audio": ("a.wav", make_wav(), "audio/wav")},
                 data={"text": "Hi.", "seed": "soon"})
    assert typed.status_code == 422 and typed.json()["field"] == "seed"


def test_other_bad_requests_get_4xx(client) -> None:
    cases = [
        client.post("/v1/synthesize", params={"format": "mp3"}, json={"text": "Hi."}),
        client.post("/v1/cleanup", json={"level": "medium"}),
        client.post("/v1/cleanup", json={"level": 1}),
        client.post("/v1/cleanup", json={"level": "light", "now": True}),
        client.post("/v1/cleanup", json=["light"]),
        client.post("/v1/cleanup", content=b"{", headers={"content-type": "application/json"}),
        client.post("/v1/cleanup", content=b"light", headers={"content-type": "text/plain"}),
        client.get("/v1/nothing-here"),
        client.put("/v1/memory"),
    ]
    statuses = [r.status_code for r in cases]
    assert statuses == [422, 422, 422, 422, 422, 400, 415, 404, 405], [
        r.text for r in cases]
    for response in cases:
        assert isinstance(response.json()["error"], str) and response.json()["error"]
    assert cases[0].json()["field"] == "format"
    assert cases[1].json()["field"] == "level"


def test_metrics_parse_and_move_after_a_synthesis(client, parse_metrics) -> None:
    before = parse_metrics(client.get("/metrics").text)
    response = client.post("/v1/synthesize", json={"text": "Count me.", "seed": 2})
    assert response.status_code == 200
    page = client.get("/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    after = parse_metrics(page.text)
    ok = ("glmtts_events_total", (("kind", "synthesis"), ("outcome", "ok")))
    assert after[ok] == before[ok] + 1
    count = ("glmtts_event_duration_seconds_count", (("kind", "synthesis"),))
    assert after[count] == before[count] + 1
    peaks = ("glmtts_event_peak_bytes_count", (("figure", "host_rss"), ("kind", "synthesis")))
    assert after[peaks] == before.get(peaks, 0) + 1
    assert after[("glmtts_host_rss_bytes", ())] > 50_000_000
    assert after[("glmtts_system_available_bytes", ())] > 0
    assert after[("glmtts_models_loaded", ())] >= 1
    assert after[("glmtts_model_weights_bytes", (("device", "cpu"), ("model", "piper")))] > 6e7
    assert after[("glmtts_probe_available", (("probe", "nvml"),))] == 0  # no GPU here
    assert after[("glmtts_probe_available", (("probe", "host"),))] == 1
    for family in ("cleanups", "cleanup_freed_bytes", "out_of_memory", "oom_recoveries"):
        assert f"# TYPE glmtts_{family}_total counter" in page.text, family


def test_cleanup_frees_a_loaded_model(client, parse_metrics) -> None:
    assert client.post("/v1/synthesize", json={"text": "Load it."}).status_code == 200
    memory = client.get("/v1/memory").json()
    assert memory["session"]["loaded"] and memory["models"]
    before = parse_metrics(client.get("/metrics").text)
    light = client.post("/v1/cleanup", json={"level": "light"}).json()
    assert light["level"] == "light" and light["model_loaded_after"] is True
    full = client.post("/v1/cleanup", json={"level": "full"})
    assert full.status_code == 200, full.text
    result = full.json()
    assert result["model_loaded_before"] is True and result["model_loaded_after"] is False
    assert result["duration_s"] > 0 and result["freed"]["host_rss_bytes"] > 0
    assert result["freed"]["torch_reserved_bytes"] is None  # no CUDA here: unknown, not 0
    after = parse_metrics(client.get("/metrics").text)
    assert after[("glmtts_models_loaded", ())] == 0
    full_count = ("glmtts_cleanups_total", (("level", "full"),))
    assert after[full_count] == before[full_count] + 1
    freed = ("glmtts_cleanup_freed_bytes_total", (("figure", "host_rss"), ("level", "full")))
    assert after[freed] > before.get(freed, 0)
    assert client.get("/v1/health").json()["loaded"] is False
    empty = client.post("/v1/cleanup").json()  # no body: full; nothing loaded any more
    assert empty["level"] == "full" and empty["model_loaded_before"] is False


def test_out_of_memory_recovery_is_counted(service, client, parse_metrics) -> None:
    before = parse_metrics(client.get("/metrics").text)
    response = client.post("/v1/synthesize", json={"text": f"Go {service.oom_mark} go."})
    assert response.status_code == 200, response.text
    assert response.headers["x-attempts"] == "2"
    assert "Out of memory on the first attempt" in response.headers["x-recovery"]
    after = parse_metrics(client.get("/metrics").text)
    recovered = ("glmtts_oom_recoveries_total", (("result", "recovered"),))
    assert after[recovered] == before[recovered] + 1
    ooms = ("glmtts_out_of_memory_total", (("kind", "synthesis"),))
    assert after[ooms] == before[ooms] + 1


def test_memory_reports_snapshot_models_and_recommendation(client) -> None:
    assert client.post("/v1/synthesize", json={"text": "Memory."}).status_code == 200
    memory = client.get("/v1/memory").json()
    snap = memory["snapshot"]
    assert snap["host_rss_bytes"] > 0 and snap["system_total_bytes"] > 0
    assert snap["torch_allocated_bytes"] is None and snap["torch_reason"]
    assert memory["models"][0]["engine"] == "piper"
    assert memory["memory_history"] == {"recording": False, "max_entries": 100_000}
    if memory["recommendation"] is None:
        assert memory["recommendation_note"]
    else:
        assert memory["recommendation"]["action"] in ("none", "light", "full")
        assert memory["recommendation"]["domain"] == "cpu"


def test_memory_snapshot_needs_cuda(client) -> None:
    response = client.get("/v1/memory/snapshot")
    assert response.status_code == 409
    assert "memory snapshots need CUDA" in response.json()["error"]


def test_openapi_describes_both_request_media_types(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/synthesize"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    text = body["application/json"]["schema"]["properties"]["text"]
    assert text["maxLength"] == 24 and text["minLength"] == 1
    assert set(spec["paths"]) >= {"/v1/synthesize", "/v1/cleanup", "/v1/memory",
                                  "/v1/memory/snapshot", "/metrics", "/v1/health"}
    assert "securitySchemes" not in spec.get("components", {})  # loopback, no token


def test_an_audio_bomb_is_refused_by_its_header(service, client, tmp_path) -> None:
    """A small FLAC that declares minutes of 8-channel 96 kHz audio (a decompression bomb) is
    refused from its header by the one reference-audio gate, before anything is decoded: the
    server's memory does not grow with what the file would decode to."""
    import numpy as np
    import psutil
    import soundfile as sf

    bomb = tmp_path / "bomb.flac"
    with sf.SoundFile(bomb, "w", samplerate=96000, channels=8, format="FLAC") as out:
        block = np.zeros((96000 * 10, 8), dtype=np.int16)
        for _ in range(12):  # 120 s: 88 M samples, 350 MB as float32
            out.write(block)
    assert bomb.stat().st_size < service.max_upload
    server = psutil.Process(service.proc.pid)
    before = server.memory_info().rss
    answer = client.post("/v1/synthesize", data={"text": "Hi."},
                         files={"reference_audio": ("bomb.flac", bomb.read_bytes(), "audio/flac")})
    assert answer.status_code == 422 and answer.json()["field"] == "reference_audio"
    assert "120.0 s long; the limit is 30 s" in answer.json()["error"]
    assert server.memory_info().rss - before < 100 * 2**20


@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 100_000, "nests deeper than 32 levels"),
    (b'{"a":' * 40_000, "nests deeper than 32 levels"),
    (b'{"text": "Hi.", "seed": ' + b"9" * 5000 + b"}", "a number of 5,000 digits"),
    (b'{"text": "Hi.", "sample_rate": ' + b"1" * 5000 + b"}", "a number of 5,000 digits"),
    (b'{"\\ud800": 1}', "not valid text"),
])
def test_hostile_json_is_a_4xx_never_a_500(client, body: bytes, words: str) -> None:
    answer = client.post("/v1/synthesize", content=body,
                         headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert words in answer.json()["error"]
    level = client.post("/v1/cleanup", content=b'{"level": ' + b"7" * 5000 + b"}",
                        headers={"content-type": "application/json"})
    assert level.status_code == 400 and "digits" in level.json()["error"]


def test_head_where_get_exists(client) -> None:
    for path in ("/v1/health", "/v1/memory", "/metrics"):
        answer = client.head(path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.content == b""


def test_memory_speaks_chinese_only_when_asked(client) -> None:
    """The policy's sentences in /v1/memory: English by default, Simplified Chinese for a
    client whose Accept-Language prefers it (the same catalog as the app's sidebar)."""
    import re

    han = re.compile(r"[\u4e00-\u9fff]")
    assert client.post("/v1/synthesize", json={"text": "Memory."}).status_code == 200
    english = client.get("/v1/memory").json()["recommendation"]
    chinese = client.get("/v1/memory",
                         headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).json()
    chinese = chinese["recommendation"]
    assert english["summary"] and not han.search(english["summary"])
    assert han.search(chinese["summary"]), chinese["summary"]
    assert [r["rule"] for r in chinese["reasons"]] == [r["rule"] for r in english["reasons"]]
    assert not han.search(client.get("/v1/memory", headers={"Accept-Language": "fr"}).json()[
        "recommendation"]["summary"])
