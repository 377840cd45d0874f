"""Streamed speech: each sentence goes to the client as soon as the engine made it.

The synthesis is the one every HTTP request runs (:func:`service.app.run_synthesis`:
admission, device queue, tracked event, metrics, cancellation), here in a task whose engine
hands each sentence to a queue (:mod:`glmtts.stream`); the response sends what the queue
holds. Nothing is sent before the first sentence exists, so an error before it (a refused
request, 429, out of memory) is still an ordinary error answer; an error after it cuts the
audio stream short, or ends an SSE stream with an ``error`` event.

``stream_format="audio"``: raw 16-bit mono samples (``pcm``), or a WAV whose header says
"length unknown" followed by the samples (``wav``). ``stream_format="sse"``: server-sent
events, OpenAI's ``speech.audio.delta`` (``audio``: base64 of the next bytes of the same
``pcm``/``wav`` stream) and a final ``speech.audio.done``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import StreamingResponse

from glmtts.request import SynthesisRequest
from glmtts.stream import Resume
from service.audio_formats import OutputFormat, pcm16, wav_stream_header
from service.runtime import Service

_DONE = object()


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


async def stream_speech(service: Service, request: Request, synthesis: SynthesisRequest,
                        synthesis_id: str, *, kind: str, fmt: OutputFormat, started: float,
                        cleanup: contextlib.ExitStack,
                        error_event: Callable[[BaseException], dict[str, Any]]
                        ) -> StreamingResponse:
    """Start the synthesis and answer with its stream once its first sentence exists.

    Args:
        kind: ``audio`` or ``sse``.
        fmt: ``pcm`` or ``wav`` (:data:`service.audio_formats.STREAMABLE`).
        started: ``time.perf_counter()`` when the request arrived (time to first audio).
        cleanup: Closed when the synthesis has ended (its temporary reference clip).
        error_event: The SSE ``error`` event of an exception raised mid-stream.

    Raises:
        Exception: whatever the synthesis raised before its first sentence (429, 503...).
    """
    from service.app import run_synthesis

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def on_audio(samples: np.ndarray, rate: int, index: int) -> None:  # synthesis thread
        loop.call_soon_threadsafe(queue.put_nowait, (index, samples, rate))

    task = asyncio.create_task(run_synthesis(
        service, request, synthesis, synthesis_id, lambda samples, rate: pcm16(samples),
        cancel=cancel, on_audio=on_audio))
    task.add_done_callback(lambda _: queue.put_nowait(_DONE))  # after every piece
    task.add_done_callback(lambda t: cleanup.close())
    first = await queue.get()
    if first is _DONE:
        task.result()  # an error before any audio: an ordinary error answer
    resume = Resume()

    async def frames() -> AsyncIterator[bytes]:
        sent = False

        def frame(data: bytes, rate: int) -> bytes:
            nonlocal sent
            if not sent:
                service.first_audio.labels(kind).observe(time.perf_counter() - started)
                if fmt.name == "wav":
                    data = wav_stream_header(rate) + data
            sent = True
            if kind == "sse":
                return _sse({"type": "speech.audio.delta",
                             "audio": base64.b64encode(data).decode()})
            return data

        try:
            item = first
            while item is not _DONE:
                index, samples, rate = item
                if resume.is_new(index):  # a retried synthesis does not repeat itself
                    yield frame(pcm16(samples), rate)
                item = await queue.get()
            try:
                outcome, whole = task.result()
            except Exception as exc:
                if kind != "sse":
                    raise  # the audio stream ends cut short
                yield _sse(error_event(exc))
                return
            rate = outcome.result.sample_rate
            if not sent:  # an engine that never emits (e.g. in a worker): all at once
                yield frame(whole, rate)
            if kind == "sse":
                yield _sse({"type": "speech.audio.done", "synthesis_id": synthesis_id,
                            "event_id": outcome.record.event_id, "sample_rate": rate,
                            "audio_seconds": round(outcome.result.duration_s, 6)})
        finally:
            if not task.done():  # the client went away: stop at the next sentence
                cancel.set()
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    media_type = "text/event-stream" if kind == "sse" else fmt.media_type
    rate = first[2] if first is not _DONE else task.result()[0].result.sample_rate
    headers = {"X-Synthesis-Id": synthesis_id, "X-Sample-Rate": str(rate),
               "X-Stream-Format": kind, "Cache-Control": "no-cache"}
    return StreamingResponse(frames(), media_type=media_type, headers=headers)
