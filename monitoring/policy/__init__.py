"""When to clean, and why: a pure policy over measured memory.

:func:`recommend` takes a :class:`~monitoring.snapshot.Snapshot` (memory now), the recorded
events (:class:`HistoryEvent` rows; :func:`history_from_frame` converts ``Store.events()``), the
next request described by generic features (:class:`PendingRequest`) and
:class:`PolicySettings`, and returns a frozen :class:`Recommendation`: an action (``none``,
``light``, ``full``), an urgency (``info``, ``advised``, ``required``), and the reasons, each a
plain sentence with its numbers and a machine-readable rule id. It reads no clock, no file and no
probe: the same arguments always give the same answer.

The memory model, per domain (GPU when the snapshot has torch allocator figures, else CPU):

- *Demand* of a request: the bytes it needs on top of what the process holds live. GPU: torch
  allocator peak of live tensors above their level at the start (exact; the tracker resets the
  peak). CPU: peak RSS (``VmHWM``) above the RSS right after the model loaded, taken only from
  syntheses whose peak rose above their start (glibc keeps freed memory and serves later requests
  from it, so a synthesis that stayed inside that pool only says "no more than the pool"). Demand
  is fitted per configuration by least squares against the text length; the upper bound adds the
  larger of ``residual_k`` root-mean-square residuals and the largest residual, and is widened by
  ``thin_margin`` when fewer than ``thin_history`` syntheses back it.
- *Headroom*: free memory now. GPU: NVML device-wide free bytes. CPU: the machine's available RAM.
- *What the request takes from the headroom*: demand minus what the process already holds unused
  and will reuse: PyTorch's cache (reserved, not allocated, not fragmented: the allocator serves
  from it, and flushes it and retries before raising out-of-memory), glibc's pool on CPU (RSS above
  the post-load level). So a light cleanup (``empty_cache``, ``malloc_trim``) never makes a request
  fit that does not fit already: it hands the cache to *other* processes. Set
  ``PolicySettings.reuses_cache=False`` for an allocator that does not reuse its cache that way;
  then a light cleanup can make room.
- *After a full cleanup* the model reloads: its weights come back, but everything else the process
  held goes (cache, fragmentation, memory retained since the load), so that is the room a full
  cleanup can make for the request.

Rules (ids in :data:`RULES`): headroom (``headroom.*``), reclaimable cache (``cache.reclaimable``;
on a CPU the free memory glibc keeps, with what a light cleanup returns where the heap figures
are known), cache growth that levels off versus a leak (``cache.levelled``, ``cache.growing``,
``leak``; on a CPU also ``leak.heap``: live malloc blocks rising across repeats of one request
shape, which no cleanup returns: see :mod:`monitoring.policy.cpu_heap`),
fragmentation (``fragmentation``, ``fragmentation.retries``), configuration switch (``switch``),
and cost (``cost.not_needed``: a full cleanup is never advised when nothing needs the room now).
"""


from __future__ import annotations

from collections.abc import Sequence

from monitoring.policy.context import _context
from monitoring.policy.cpu_heap import heap_leak
from monitoring.policy.history import HistoryEvent, history_from_frame, history_from_records
from monitoring.policy.pending import PendingRequest, lighter_request
from monitoring.policy.prediction import PeakPrediction, predict_peak
from monitoring.policy.recommendation import Reason, Recommendation, should_act
from monitoring.policy.rules import (
    _combine,
    _rule_cache,
    _rule_cost,
    _rule_fragmentation,
    _rule_headroom,
    _rule_leak,
    _rule_restart,
    _rule_switch,
)
from monitoring.policy.settings import ACTIONS, MODES, RULES, URGENCIES, PolicySettings
from monitoring.snapshot import Snapshot


def recommend(snapshot: Snapshot, history: Sequence[HistoryEvent],
              pending: PendingRequest | None = None,
              settings: PolicySettings | None = None) -> Recommendation:
    """What to do before ``pending`` (or now, when None), and why. Pure and deterministic.

    Args:
        snapshot: Memory now (``take_snapshot()``; ``releasable=True`` makes the light figure
            exact on GPU).
        history: This session's events, oldest first (:func:`history_from_frame` of
            ``store.events(session_id=...)``, or :func:`history_from_records`).
        pending: The next request; None for an idle check (no headroom or switch rule).
        settings: Thresholds and mode; defaults when None.
    """
    settings = settings or PolicySettings()
    if settings.mode == "off":
        return Recommendation("none", "info", (Reason("policy.off", "none", "info",
                                                      "policy off"),), mode="off")
    ctx = _context(snapshot, history, pending, settings)
    heap = heap_leak(ctx)  # on a CPU, live heap growth: more telling than RSS's, so it wins
    leak = [r for r in _rule_leak(ctx) if not (heap and r.rule == "leak")]
    reasons = [*_rule_switch(ctx), *_rule_restart(ctx), *_rule_headroom(ctx), *heap, *leak,
               *_rule_fragmentation(ctx), *_rule_cache(ctx)]
    return _combine(ctx, _rule_cost(ctx, reasons))



__all__ = [
    "ACTIONS",
    "MODES",
    "RULES",
    "URGENCIES",
    "HistoryEvent",
    "PeakPrediction",
    "PendingRequest",
    "PolicySettings",
    "Reason",
    "Recommendation",
    "history_from_frame",
    "history_from_records",
    "lighter_request",
    "predict_peak",
    "recommend",
    "should_act",
]
