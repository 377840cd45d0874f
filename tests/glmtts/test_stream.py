"""Audio as it is made (glmtts.stream): the embedded voice hands over one piece per sentence,
and the pieces are exactly the result's audio."""

from __future__ import annotations

import numpy as np
import pytest

from glmtts.engines.piper import PiperEngine
from glmtts.request import SynthesisRequest
from glmtts.stream import Resume, emit, streaming


def test_piper_emits_one_piece_per_sentence_adding_up_to_the_result() -> None:
    engine = PiperEngine()
    engine.load("cpu")
    pieces: list[tuple[int, int, np.ndarray]] = []
    with streaming(lambda samples, rate, index: pieces.append((index, rate, samples))):
        result = engine.synthesize(SynthesisRequest(
            text="One. Two words. Three more words. And four.", seed=2, sample_rate=24000))
    assert [i for i, _, _ in pieces] == [0, 1, 2, 3] == list(range(result.metadata["sentences"]))
    assert {rate for _, rate, _ in pieces} == {24000}
    assert np.array_equal(np.concatenate([p for _, _, p in pieces]), result.audio)
    # without a listener nothing is collected, and the audio is the same
    again = engine.synthesize(SynthesisRequest(
        text="One. Two words. Three more words. And four.", seed=2, sample_rate=24000))
    assert len(pieces) == 4 and np.array_equal(again.audio, result.audio)


def test_progress_hears_each_sentence_of_how_many() -> None:
    engine = PiperEngine()
    engine.load("cpu")
    heard: list[tuple[int, int | None]] = []
    with streaming(None, lambda done, total: heard.append((done, total))):
        engine.synthesize(SynthesisRequest(text="One. Two words. Three more words.", seed=2))
    assert heard == [(1, 3), (2, 3), (3, 3)]
    emit(np.zeros(1, np.float32), 8000, 0)  # outside: nobody hears it
    assert len(heard) == 3


def test_emit_reaches_only_the_listener_of_its_thread_and_nests() -> None:
    outer: list[int] = []
    inner: list[int] = []
    emit(np.zeros(1, np.float32), 8000, 0)  # nobody listens: nothing happens
    with streaming(lambda s, r, i: outer.append(i)):
        emit(np.zeros(1, np.float32), 8000, 0)
        with streaming(lambda s, r, i: inner.append(i)):
            emit(np.zeros(1, np.float32), 8000, 1)
        emit(np.zeros(1, np.float32), 8000, 2)
    assert outer == [0, 2] and inner == [1]


@pytest.mark.parametrize(("indices", "new"), [
    ([0, 1, 2], [True, True, True]),
    ([0, 1, 0, 1, 2, 3], [True, True, False, False, True, True]),  # a retry starts over
])
def test_resume_skips_what_a_retry_repeats(indices, new) -> None:
    resume = Resume()
    assert [resume.is_new(i) for i in indices] == new
