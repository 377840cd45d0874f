"""Memory-aware admission against real servers: the budget is never exceeded by what is
admitted at once, a larger budget admits more at once (counted by the service, not timed), a
request too big even alone gets a clear refusal, and overlapping syntheses on one model give
the same audio as one alone."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest

MIB = 2**20
#: Each concurrent request: about two seconds of synthesis on a shared CPU, so that all four
#: arrive (and are predicted, before any history) while the first still runs.
TEXT = ("The market square filled with voices from dawn until dusk, and the old bridge "
        "carried carts and cattle across the water while children watched the boats.")


def _burst(service, n: int = 4) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with service.client(timeout=300) as http:
            return http.post("/v1/synthesize", json={"text": TEXT, "seed": 11})

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def _admission(service) -> dict:
    with service.client() as http:
        return http.get("/v1/memory").json()["admission"]


@pytest.mark.slow
def test_budget_bounds_what_runs_at_once_and_more_budget_admits_more(tmp_path: Path,
                                                                     launch) -> None:
    counts = {}
    for name, budget in (("small", 512), ("large", 4096)):
        service = launch(tmp_path / name, "--preload", "--memory-budget", f"{budget}MiB",
                         "--unseen-peak", "512MiB")
        try:
            answers = _burst(service)
            assert [a.status_code for a in answers] == [200] * 4, answers[0].text
            # overlapping syntheses on one model: the same audio as each other
            assert len({a.content for a in answers}) == 1
            state = _admission(service)
            assert state["budget_bytes"] <= budget * MIB
            assert state["explicit_budget_bytes"] == budget * MIB
            assert 0 < state["max_admitted_bytes"] <= budget * MIB
            assert state["admitted_total"] == 4
            assert state["admitted"] == 0 and state["queued"] == 0
            assert state["concurrent"] is True and state["capacity"] is None
            counts[name] = state["max_admitted"]
            if name == "large":  # and the same audio as one synthesis alone
                with service.client(timeout=300) as http:
                    alone = http.post("/v1/synthesize", json={"text": TEXT, "seed": 11})
                assert alone.content == answers[0].content
        finally:
            assert service.stop() == 0, service.output()
    assert counts["small"] == 1  # 512 MiB predicted each (no history yet): one at a time
    assert counts["large"] >= 2
    assert counts["large"] > counts["small"]


def test_too_big_alone_is_refused_once_measured_with_both_figures(tmp_path: Path, launch,
                                                   parse_metrics) -> None:
    service = launch(tmp_path / "tiny", "--memory-budget", "16MiB", "--unseen-peak", "256MiB")
    try:
        with service.client() as http:
            # no history: the fixed estimate is a guess, so the request runs alone and measures
            first = http.post("/v1/synthesize", json={"text": "Hello there, how are you?"})
            assert first.status_code == 200, first.text
            # now the policy's bound from that synthesis is a measurement: too big is refused
            answer = http.post("/v1/synthesize", json={"text": "Hello there, how are you?"})
            assert answer.status_code == 413, answer.text
            body = answer.json()
            assert body["field"] == "text"
            assert "from 1 earlier syntheses" in body["error"]
            assert "memory budget of 16.0 MiB" in body["error"]
            assert int(answer.headers["x-predicted-peak-bytes"]) > 16 * MIB
            assert answer.headers["x-memory-budget-bytes"] == str(16 * MIB)
            speech = http.post("/v1/audio/speech", json={
                "model": "piper", "input": "Hello there, how are you?", "voice": "alloy"})
            assert speech.status_code == 413
            error = speech.json()["error"]
            assert error["code"] == "memory_budget_exceeded" and error["param"] == "input"
            assert "16.0 MiB" in error["message"]
            state = http.get("/v1/memory").json()["admission"]
            assert state["refused_total"] == 2 and state["admitted_total"] == 1
            assert state["max_admitted_bytes"] == 256 * MIB
            values = parse_metrics(http.get("/metrics").text)
            assert values[("glmtts_admission_budget_bytes", ())] == 16 * MIB
            assert values[("glmtts_admission_queue_length", ())] == 0
            assert values[("glmtts_admission_admitted_bytes", ())] == 0
    finally:
        assert service.stop() == 0, service.output()


def test_sizes_and_tiers_are_checked_at_start(tmp_path: Path) -> None:
    from service.admission import parse_size
    from service.errors import ServiceConfigError
    from service.settings import parse_tiers

    assert parse_size("512MiB") == 512 * MIB
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("300") == 300 * MIB
    assert parse_size("1.5g") == int(1.5 * 2**30)
    for bad in ("lots", "-1GiB", "0", "5 parsecs", "nan"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_tiers("1,2,3") == (1.0, 2.0, 3.0)
    assert parse_tiers("off") == ()
    for bad in ("3,2,1", "1,1", "1,2,3,4", "-1", "soon"):
        with pytest.raises(ServiceConfigError):
            parse_tiers(bad)
