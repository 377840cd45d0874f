"""Policy settings: actions, urgencies, modes, rule ids, thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MiB = 1 << 20
GiB = 1 << 30

ACTIONS = ("none", "light", "full", "restart")
"""Cleanup actions, cheapest first (``restart``: end the process that holds the model, for
models run in a worker process; only it frees the CUDA context and what only NVML sees)."""
URGENCIES = ("info", "advised", "required")
"""Urgencies, weakest first."""
MODES = ("advise", "auto", "off")
"""``advise``: only recommend; ``auto``: the caller runs a required action before the
synthesis (see :func:`should_act`); ``off``: no rules at all."""
RULES = (
    "headroom.fits",
    "headroom.light",
    "headroom.full",
    "headroom.impossible",
    "headroom.unknown",
    "cache.reclaimable",
    "cache.levelled",
    "cache.growing",
    "leak",
    "leak.heap",
    "fragmentation",
    "fragmentation.retries",
    "switch",
    "restart.non_torch",
    "restart.oom",
    "cost.not_needed",
    "policy.off",
)
"""Every rule id a :class:`Reason` can carry."""


#: For a model that declares nothing: another engine's state serves no request of this one.
DEFAULT_SWITCH_RULES: tuple[tuple[str, str, str], ...] = (
    ("engine", "full", "the previous engine's model and caches serve no request of the new one"),
)


@dataclass(frozen=True)
class PolicySettings:
    """Thresholds and switches of the policy (all byte figures in bytes).

    Attributes:
        mode: One of :data:`MODES`.
        safety_margin: Fraction added to the predicted upper bound before it is compared with
            free memory (covers what the fit does not see: workspaces, other processes' growth).
        thin_history: Fewer earlier syntheses of the configuration than this is thin history.
        thin_margin: Extra fraction on the upper bound when history is thin.
        residual_k: Upper bound = fit + max(``residual_k`` x RMS residual, largest residual).
        fit_window: Newest syntheses of the configuration the fit uses.
        config_features: Features that select a configuration (fit and leak trend); None:
            ``engine``, ``device`` and every feature the pending request names. A None value in
            the pending request matches any recorded value.
        size_feature: The recorded feature that holds each event's size, the quantity memory
            grows with (the caller names it, e.g. a text length).
        size_unit: How sentences name one unit of size (e.g. ``tokens``).
        lighter: ``(feature, heavy value, light value, words)`` for each change that makes a
            request need less memory without changing its result's meaning (declared by the
            engine); ``words`` say it as advice (e.g. "turn the cache off").
        switch_rules: ``(feature, action, why)`` for each feature whose change since the last
            synthesis makes state the model's process holds stale: ``action`` ``full`` or
            ``restart`` is then required first, ``light`` advised, ``none`` only noted (the
            engine handles the switch itself). Engines declare these in their capabilities;
            the defaults are for an engine that declares nothing.
        restart_available: Whether the model runs in a process that can be restarted (an
            engine worker): enables the ``restart`` rules.
        reuses_cache: Whether the allocator reuses its cache before failing (PyTorch's does), so
            cached bytes count as room for the request and a light cleanup adds none.
        cpu_censor_bytes: A CPU synthesis whose peak RSS rose less than this above its start was
            served from memory the process already held: no demand observation.
        leak_window: Newest same-configuration syntheses the leak trend looks at.
        leak_min_steps: Fewest synthesis-to-synthesis steps needed to call a leak.
        leak_slope_bytes: Median retained growth per synthesis from which growth is a leak.
        leak_rising_fraction: Fraction of steps that must rise (monotone-ish growth).
        leak_runway: A leak that leaves room for fewer syntheses than this needs a full cleanup
            soon, even when the next request fits.
        cache_note_bytes: Growth of the cache (reserved on GPU, RSS on CPU) worth a note.
        reclaimable_bytes: Reclaimable cache worth a note.
        heap_reclaimable_bytes: On a CPU, free memory the C allocator holds resident (what a
            light cleanup returns, when the heap figures are known) worth a note.
        heap_leak_slope_bytes: On a CPU, median growth of the C heap in use per repeat of one
            request shape from which it is a possible leak (kernel caches keyed by shape grow
            with new shapes, by about 2 MiB a synthesis while they fill: not with repeats).
        low_free_fraction: Free memory below this fraction of the total is tight.
        other_process_bytes: Memory other processes hold on the GPU from which they count.
        comfort_fraction: A request that takes at most this fraction of the free memory fits
            comfortably (a full cleanup then buys nothing needed now); without a pending
            request, free memory under ``low_free_fraction`` of the total is what needs room.
        fragmentation_bytes: Inactive-split bytes from which fragmentation is reported...
        fragmentation_fraction: ...when they are also at least this fraction of the memory
            reserved beyond live tensors (reserved - allocated; the weights would drown a
            fraction of all reserved memory).
    """

    mode: str = "advise"
    safety_margin: float = 0.10
    thin_history: int = 5
    thin_margin: float = 0.5
    residual_k: float = 2.0
    fit_window: int = 40
    config_features: tuple[str, ...] | None = None
    size_feature: str = "size"
    size_unit: str = "units"
    lighter: tuple[tuple[str, Any, Any, str], ...] = ()
    switch_rules: tuple[tuple[str, str, str], ...] = DEFAULT_SWITCH_RULES
    restart_available: bool = False
    reuses_cache: bool = True
    cpu_censor_bytes: int = 4 * MiB
    leak_window: int = 8
    leak_min_steps: int = 4
    leak_slope_bytes: int = 8 * MiB
    leak_rising_fraction: float = 0.7
    leak_runway: int = 20
    cache_note_bytes: int = 64 * MiB
    reclaimable_bytes: int = 256 * MiB
    heap_reclaimable_bytes: int = 64 * MiB
    heap_leak_slope_bytes: int = 4 * MiB
    low_free_fraction: float = 0.10
    other_process_bytes: int = 256 * MiB
    comfort_fraction: float = 0.5
    fragmentation_bytes: int = 512 * MiB
    fragmentation_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        for name in ("safety_margin", "thin_margin", "residual_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("thin_history", "fit_window", "leak_window", "leak_min_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("low_free_fraction", "comfort_fraction", "fragmentation_fraction",
                     "leak_rising_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")



def config_names(settings: PolicySettings, wanted: dict[str, Any]) -> tuple[str, ...]:
    """The features that select a configuration for a request with features ``wanted``."""
    if settings.config_features is not None:
        return settings.config_features
    return ("engine", "device", *sorted(k for k in wanted if k not in ("engine", "device")))
