"""The next piece of work, as the policy sees it: generic features, no engine knowledge."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitoring.i18n import _


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@dataclass(frozen=True)
class PendingRequest:
    """The next piece of work, by generic features (names as the events record them).

    Give resolved values where the caller resolves them (the device the model runs on):
    a None matches any recorded value, and a switch from or to None is not reported.

    Attributes:
        engine: Name of what runs the work (the model's engine).
        size: The quantity memory grows with, in the units of ``PolicySettings.size_unit``
            (recorded as ``PolicySettings.size_feature`` on each event).
        device: ``cpu``, ``cuda``, ``cuda:N``; None: unknown.
        features: ``(name, value)`` of the configuration (hashable values only).
    """

    engine: str
    size: int
    device: str | None = None
    features: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError(f"size must be an int, not {self.size!r}")
        if self.size < 0:
            raise ValueError("size must not be negative")
        object.__setattr__(self, "features", tuple(sorted(
            (str(k), v) for k, v in self.features if _hashable(v))))

    def feature_map(self) -> dict[str, Any]:
        """Every configuration feature by name, ``engine`` and ``device`` included."""
        return {**dict(self.features), "engine": self.engine, "device": self.device}

    def with_features(self, changes: Mapping[str, Any]) -> PendingRequest:
        """The same request with some features changed."""
        merged = {**dict(self.features), **changes}
        return dataclasses.replace(self, features=tuple(merged.items()))


def lighter_request(pending: PendingRequest,
                    lighter: tuple[tuple[str, Any, Any, str], ...]) -> PendingRequest | None:
    """The configuration to retry with after an out-of-memory error (``lighter`` from
    :attr:`PolicySettings.lighter`), or None when no declared change applies."""
    features = pending.feature_map()
    changes = {name: light for name, heavy, light, _ in lighter if features.get(name) == heavy}
    return pending.with_features(changes) if changes else None


def lighter_words(pending: PendingRequest,
                  lighter: tuple[tuple[str, Any, Any, str], ...]) -> str | None:
    """How to say the lighter configuration as advice ("turn the cache off"), or None."""
    features = pending.feature_map()
    words = [_(w) for name, heavy, _light, w in lighter if features.get(name) == heavy]
    return _(" and ").join(words) if words else None
