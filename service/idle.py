"""Idle release in tiers for the service: ``serve --idle-tiers T1,T2,T3`` (seconds of
idleness, default 300,900,3600; ``off``).

The tiers themselves (light cleanup, unload, worker restart; each an ordinary cleanup event
with the idle marker, the reload after it measured) are :mod:`glmtts.idle`'s, shared with the
Streamlit app. What the service adds: idleness counts from its admission queue (the last
admission or end of a synthesis, :attr:`service.admission.Admission.last_activity`), a request
that waits in the queue counts as busy, each tier run is counted in
``glmtts_idle_releases_total{tier}``, and ``/v1/memory`` shows the countdown to the next tier.
"""

from __future__ import annotations

from typing import Any

from glmtts.idle import IdleReleaser, IdleTiers


class IdleRelease:
    """The idle release of one service (a daemon thread; :meth:`stop` ends it).

    Args:
        service: The :class:`~service.runtime.Service`.
        tiers: Idle seconds of each tier, increasing (at most three; empty: off).
    """

    def __init__(self, service: Any, tiers: tuple[float, ...]) -> None:
        self.service = service
        self.tiers = IdleTiers(service.session, tiers,
                               last_activity=lambda: service.admitter.last_activity,
                               busy=self._busy, on_release=self._count)
        self._releaser = IdleReleaser(name="idle-release")

    def start(self) -> IdleRelease:
        if self.tiers.tiers:
            self._releaser.watch(self.tiers)
        return self

    def stop(self) -> None:
        self._releaser.stop()

    def _busy(self) -> bool:
        return bool(self.service.pending or self.service.admitter.busy)

    def _count(self, entry: dict[str, Any]) -> None:
        counter = getattr(self.service, "idle_counter", None)
        if counter is not None:
            counter.labels(str(entry["tier"])).inc()

    def state(self) -> dict[str, Any]:
        """What ``/v1/memory`` shows: the tiers, idleness, the next tier and its countdown."""
        return self.tiers.state()
