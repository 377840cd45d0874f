"""Recorded events as the policy reads them, and what they say about the model's state."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitoring.records import Change, EventRecord

_FIGURES = (
    "torch_allocated",
    "torch_reserved",
    "torch_inactive_split",
    "host_rss",
    "nvml_process",
    "nvml_device",
    "host_heap_in_use",
    "host_heap_releasable",
)
_UNKNOWN = Change(None, None)


@dataclass(frozen=True)
class HistoryEvent:
    """One recorded event, as the policy reads it (a light, frozen row).

    Attributes:
        kind: ``load``, ``synthesis``, ``cleanup``...
        ok: Whether it finished without an exception.
        oom: Whether it failed for lack of memory.
        duration_s: Wall time of the event (a load's is the reload cost).
        features: Recorded features (treat as read-only).
        torch_allocated, torch_reserved, torch_inactive_split, host_rss, nvml_process,
        nvml_device, host_heap_in_use, host_heap_releasable: Before/after/peak of each figure
            (see :class:`~monitoring.records.Change`).
        alloc_retries_before: torch ``num_alloc_retries`` at the start, when recorded.
        alloc_retries_after: Likewise at the end.
    """

    kind: str
    ok: bool = True
    oom: bool = False
    duration_s: float | None = None
    features: Mapping[str, Any] = field(default_factory=dict)
    torch_allocated: Change = _UNKNOWN
    torch_reserved: Change = _UNKNOWN
    torch_inactive_split: Change = _UNKNOWN
    host_rss: Change = _UNKNOWN
    nvml_process: Change = _UNKNOWN
    nvml_device: Change = _UNKNOWN
    host_heap_in_use: Change = _UNKNOWN
    host_heap_releasable: Change = _UNKNOWN
    alloc_retries_before: int | None = None
    alloc_retries_after: int | None = None

    @classmethod
    def from_record(cls, record: EventRecord) -> HistoryEvent:
        """The row of a tracked :class:`~monitoring.records.EventRecord`."""
        figures = record.breakdown.as_dict()
        return cls(
            kind=record.kind, ok=record.ok, oom=record.oom, duration_s=record.duration_s,
            features=dict(record.features),
            **{name: figures[name] for name in _FIGURES},
            alloc_retries_before=record.before.torch_num_alloc_retries,
            alloc_retries_after=record.after.torch_num_alloc_retries,
        )


def _int(value: Any) -> int | None:
    """An int from a store cell (None, NaN, float or int)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else int(number)


def _retries(detail: Any) -> tuple[int | None, int | None]:
    if not isinstance(detail, str) or not detail:
        return None, None
    data = json.loads(detail)
    return (_int(data.get("before", {}).get("torch_num_alloc_retries")),
            _int(data.get("after", {}).get("torch_num_alloc_retries")))


def _row_event(row: Mapping[str, Any]) -> HistoryEvent:
    features = row.get("features")
    if features is None:
        features = row.get("features_json") or {}
    if isinstance(features, str):
        features = json.loads(features)
    figures = {
        name: Change(_int(row.get(f"{name}_before_bytes")), _int(row.get(f"{name}_after_bytes")),
                     _int(row.get(f"{name}_peak_bytes")))
        for name in _FIGURES
    }
    duration = row.get("duration_s")
    duration = None if duration is None or math.isnan(float(duration)) else float(duration)
    before, after = _retries(row.get("detail_json"))
    return HistoryEvent(kind=str(row["kind"]), ok=bool(row.get("ok", True)),
                        oom=bool(row.get("oom", False)), duration_s=duration,
                        features=dict(features), **figures,
                        alloc_retries_before=before, alloc_retries_after=after)


def history_from_frame(frame: Any) -> list[HistoryEvent]:
    """Rows of ``Store.events()`` (a DataFrame, oldest first) as :class:`HistoryEvent` s.

    Also accepts a list of row dicts with the same column names. ``num_alloc_retries`` is read
    from ``detail_json`` when the frame was queried with ``detail=True``.
    """
    rows = frame.to_dict("records") if hasattr(frame, "to_dict") else list(frame)
    return [_row_event(row) for row in rows]


def history_from_records(records: Iterable[EventRecord]) -> list[HistoryEvent]:
    """Tracked records (oldest first) as :class:`HistoryEvent` s."""
    return [HistoryEvent.from_record(record) for record in records]



def _last_load(history: Sequence[HistoryEvent], engine: str | None) -> int | None:
    """Index of the newest ok load event (of ``engine`` when given)."""
    for i in range(len(history) - 1, -1, -1):
        event = history[i]
        if event.kind == "load" and event.ok and (
                engine is None or event.features.get("engine") in (None, engine)):
            return i
    return None


def _full_cleanup_after(history: Sequence[HistoryEvent], index: int) -> bool:
    return any(e.kind == "cleanup" and e.ok and e.features.get("level") == "full"
               for e in history[index + 1:])


def _is_loaded(history: Sequence[HistoryEvent], load: int | None) -> bool:
    """Whether the model is in memory: loaded (or used) and no full cleanup since."""
    start = load
    if start is None:
        start = next((i for i in range(len(history) - 1, -1, -1)
                      if history[i].kind == "synthesis" and history[i].ok), None)
    return start is not None and not _full_cleanup_after(history, start)




def _weights(history: Sequence[HistoryEvent], load: int | None) -> int | None:
    """Model bytes of the load at ``load``: its ``weights_bytes`` feature, else allocated growth."""
    if load is None:
        return None
    event = history[load]
    weights = event.features.get("weights_bytes")
    if isinstance(weights, int) and not isinstance(weights, bool):
        return weights
    retained = event.torch_allocated.retained_bytes
    return retained if retained is not None and retained > 0 else None

