"""Memory-aware admission: as many syntheses at once as their predicted peaks fit a budget.

Every synthesis request is predicted when it arrives: the policy's upper bound of its demand
(:func:`monitoring.policy.predict_peak`: fitted per engine and configuration against the text
length, with its residual margin, widened while the history is thin), or, before the session
has any usable history, a fixed conservative estimate (``serve --unseen-peak``, said as such in
``/v1/memory``). Demand is what a synthesis needs above the loaded model, so the budget counts
only that growth.

The budget is the free memory of the device the model runs on (NVML's free bytes on a GPU, the
machine's available RAM on the CPU), capped by ``serve --memory-budget`` when given. A request
is admitted when the predicted bytes of the syntheses already admitted plus its own fit the
budget (free memory is read again at each decision; what running syntheses already took from
it is counted twice, which errs on the safe side). Requests wait in arrival order: none passes
one that waits before it. One whose prediction from history cannot fit even alone is refused at
once (:class:`AdmissionRefusedError`, 413) with both figures; one with only the fixed estimate
runs alone instead, and its measured peak replaces the guess.
Engines that cannot run two syntheses on one model (``Capabilities.concurrent`` false, or
in a worker process) are admitted one at a time, still within the budget.

The controller records what it did (the most bytes and syntheses admitted at once, measured
durations), so that a test or a dashboard can check it never admitted more than the budget, and
so that a full queue's 429 carries a ``Retry-After`` computed from measured durations.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from glmtts.cancel import Cancelled
from glmtts.errors import GlmTtsError

#: Predicted demand of a request before the session has any usable history (2 GiB: above what
#: the embedded voice or the twin needs on a CPU; GLM-TTS on a GPU is learnt after one request).
DEFAULT_UNSEEN_PEAK_BYTES = 2 * 2**30
#: Durations kept to estimate a wait.
DURATIONS_KEPT = 50
#: How often a waiting request reads free memory again (memory held by others may go).
RECHECK_S = 0.25


class AdmissionRefusedError(GlmTtsError):
    """A request whose predicted peak cannot fit the memory budget even alone (413)."""

    def __init__(self, message: str, predicted_bytes: int, budget_bytes: int) -> None:
        super().__init__(message)
        self.predicted_bytes = predicted_bytes
        self.budget_bytes = budget_bytes


@dataclass(frozen=True)
class Prediction:
    """A request's predicted demand and where the figure comes from."""

    bytes: int
    source: str  # "history" (the policy's upper bound) or "unseen" (the fixed estimate)
    samples: int = 0


@dataclass
class Ticket:
    """One request in the admission queue (or admitted)."""

    prediction: Prediction
    arrived: float
    admitted_at: float | None = None


class Admission:
    """The admission controller of one service.

    Args:
        free_bytes: Free memory on the model's device now (None: unknown).
        budget_bytes: Explicit budget (``--memory-budget``), capping the free memory.
        capacity: Syntheses that may run at once regardless of memory (None: no cap; 1 for
            an engine that cannot run two at once).
        capacity_reason: Why there is a cap, in words.
    """

    def __init__(self, free_bytes: Callable[[], int | None], *, budget_bytes: int | None,
                 capacity: int | None, capacity_reason: str | None = None) -> None:
        self._free = free_bytes
        self.explicit_budget = budget_bytes
        self.capacity = capacity
        self.capacity_reason = capacity_reason
        self._cond = threading.Condition()
        self._queue: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._durations: deque[float] = deque(maxlen=DURATIONS_KEPT)
        self.max_admitted_bytes = 0
        self.max_admitted = 0
        self.admitted_total = 0
        self.refused_total = 0
        self._closed = False
        #: ``time.monotonic()`` of the last admission or end of a synthesis (idle release).
        self.last_activity = time.monotonic()

    # ------------------------------------------------------------------ figures
    def budget(self) -> tuple[int | None, str]:
        """The budget now and where it comes from (``free``, ``explicit`` or both)."""
        free = self._free()
        if self.explicit_budget is not None and (free is None or self.explicit_budget <= free):
            return self.explicit_budget, "explicit (--memory-budget)"
        if free is not None:
            return free, "free memory on the device" + (
                " (below --memory-budget)" if self.explicit_budget is not None else "")
        return None, "free memory unknown and no --memory-budget: no limit"

    @property
    def admitted_bytes(self) -> int:
        with self._cond:  # a re-entrant lock: callers may hold it already
            return sum(t.prediction.bytes for t in self._running)

    @property
    def busy(self) -> bool:
        """Whether a synthesis runs or waits."""
        with self._cond:
            return bool(self._running or self._queue)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def median_duration_s(self) -> float | None:
        with self._cond:
            return statistics.median(self._durations) if self._durations else None

    def estimated_wait_s(self, ahead: int | None = None) -> float | None:
        """Seconds until a request arriving now would start: the requests ahead of it, run
        as many at a time as run now, each taking the median measured duration (None: no
        duration measured yet)."""
        median = self.median_duration_s()
        if median is None:
            return None
        with self._cond:
            ahead = len(self._queue) + len(self._running) if ahead is None else ahead
            parallel = max(1, len(self._running))
        return math.ceil(ahead / parallel) * median

    def retry_after_s(self) -> int:
        """``Retry-After`` for a refused request: the estimated wait, at least 1 s."""
        wait = self.estimated_wait_s()
        return max(1, math.ceil(wait)) if wait is not None else 1

    def state(self) -> dict[str, Any]:
        """The figures ``/v1/memory`` shows."""
        budget, source = self.budget()
        median = self.median_duration_s()
        with self._cond:
            return {
                "budget_bytes": budget, "budget_source": source,
                "explicit_budget_bytes": self.explicit_budget,
                "admitted_bytes": self.admitted_bytes, "admitted": len(self._running),
                "queued": len(self._queue),
                "capacity": self.capacity, "capacity_reason": self.capacity_reason,
                "max_admitted_bytes": self.max_admitted_bytes,
                "max_admitted": self.max_admitted,
                "admitted_total": self.admitted_total, "refused_total": self.refused_total,
                "median_duration_s": round(median, 4) if median is not None else None,
            }

    # ------------------------------------------------------------------ admission
    def _fits(self, ticket: Ticket, budget: int | None) -> bool:
        if self.capacity is not None and len(self._running) >= self.capacity:
            return False
        if not self._running:
            return True  # checked against the budget alone on arrival
        return budget is None or self.admitted_bytes + ticket.prediction.bytes <= budget

    def _refuse_if_too_big(self, prediction: Prediction) -> None:
        budget, source = self.budget()
        if budget is None or prediction.source != "history":
            # the fixed estimate for a configuration with no history is a guess: such a
            # request runs alone (nothing else admitted beside it) and measures the real peak;
            # refusing it would keep a small machine from ever learning its peaks
            return
        # alone: the free memory now plus what admitted ones were granted
        alone = budget if source.startswith("explicit") else budget + self.admitted_bytes
        if self.explicit_budget is not None:
            alone = min(alone, self.explicit_budget)
        if prediction.bytes > alone:
            # here, not at the top: `glmtts synth` reads serve's options and imports nothing
            # of monitoring (tests/glmtts/test_cold_start.py)
            from monitoring.units import fmt_bytes

            with self._cond:
                self.refused_total += 1
            how = ("the policy's upper bound from " f"{prediction.samples} earlier syntheses"
                   if prediction.source == "history" else
                   "the fixed estimate for a configuration with no history yet (serve "
                   "--unseen-peak)")
            raise AdmissionRefusedError(
                f"this request's predicted peak is {fmt_bytes(prediction.bytes)} ({how}), more "
                f"than the memory budget of {fmt_bytes(alone)} ({source}) even with nothing else "
                f"running: shorten the text, raise --memory-budget or free memory",
                prediction.bytes, alone)

    @contextmanager
    def admit(self, prediction: Prediction, cancel: threading.Event | None = None
              ) -> Iterator[Ticket]:
        """Wait in order until ``prediction`` fits, hold its bytes during the block.

        Raises:
            AdmissionRefusedError: it cannot fit even alone.
            Cancelled: ``cancel`` was set while it waited (the client went away).
        """
        self._refuse_if_too_big(prediction)
        ticket = Ticket(prediction, time.monotonic())
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                budget, _ = self.budget()  # outside the lock: probes take a moment
                with self._cond:
                    if self._closed:
                        raise Cancelled("the service is shutting down")
                    if self._queue[0] is ticket and self._fits(ticket, budget):
                        self._queue.popleft()
                        self._running.append(ticket)
                        ticket.admitted_at = self.last_activity = time.monotonic()
                        self.admitted_total += 1
                        self.max_admitted = max(self.max_admitted, len(self._running))
                        self.max_admitted_bytes = max(self.max_admitted_bytes,
                                                      self.admitted_bytes)
                        self._cond.notify_all()  # the next one may fit too
                        break
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("the client went away while waiting for memory")
                    self._cond.wait(RECHECK_S)
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                self._cond.notify_all()
            raise
        try:
            yield ticket
        finally:
            with self._cond:
                self._running.remove(ticket)
                assert ticket.admitted_at is not None
                self.last_activity = time.monotonic()
                self._durations.append(self.last_activity - ticket.admitted_at)
                self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting request with :class:`Cancelled` (the service stops)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def parse_size(text: str) -> int:
    """Bytes of ``512MiB``, ``2GiB``, ``1.5G``, ``800M`` or a plain number of MiB.

    Raises:
        ValueError: anything else, or a size that is not positive.
    """
    units = {"": 2**20, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20,
             "mb": 10**6, "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40,
             "b": 1}
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("kmgtib")
    unit = raw[len(number):]
    if unit not in units:
        raise ValueError(f"{text!r} is not a size: write e.g. 512MiB or 2GiB")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size: write e.g. 512MiB or 2GiB") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a size must be positive, not {text!r}")
    return int(value * units[unit])
