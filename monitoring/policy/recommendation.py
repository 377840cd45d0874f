"""What the policy answers: reasons and one recommendation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitoring.i18n import N_, _
from monitoring.policy.pending import PendingRequest
from monitoring.policy.prediction import PeakPrediction
from monitoring.policy.settings import MODES

#: Actions and urgencies as sentences name them (translated where shown).
WORDS = {"none": N_("none"), "light": N_("light"), "full": N_("full"),
         "restart": N_("restart"), "info": N_("info"), "advised": N_("advised"),
         "required": N_("required")}


def word(value: str) -> str:
    """An action or urgency in the current language."""
    return _(WORDS.get(value, value))


@dataclass(frozen=True)
class Reason:
    """One rule's finding.

    Attributes:
        rule: Machine-readable id (one of :data:`RULES`).
        action: What this finding alone calls for (one of :data:`ACTIONS`).
        urgency: How strongly (one of :data:`URGENCIES`).
        text: One plain sentence with its numbers, for people.
    """

    rule: str
    action: str
    urgency: str
    text: str


@dataclass(frozen=True)
class Recommendation:
    """What to do before the next synthesis, and why.

    Attributes:
        action: ``none``, ``light`` or ``full``: the strongest action among the reasons of the
            highest urgency.
        urgency: ``info``, ``advised`` or ``required``: the highest among the reasons.
        reasons: Every finding, most urgent first.
        mode: The settings' mode (see :func:`should_act`).
        domain: ``gpu`` or ``cpu`` (None when the policy is off).
        prediction: The pending request's predicted demand, or None (no request or history).
        needed_bytes: Free memory the pending request will take (upper bound with margins, after
            what the process holds unused is reused), or None when not predictable.
        headroom_bytes: Free memory now (GPU: NVML device free; CPU: available RAM), or None.
        light_frees_bytes: What a light cleanup returns (GPU: releasable cache; CPU: glibc's
            resident free heap, an estimate, or None where the heap cannot be read).
        full_frees_bytes: What a full cleanup returns: the model's weights plus the light part
            (on CPU without heap figures: the weights; the trim's share is unknown). None when
            the weights are unknown.
        reload_cost_s: Median measured load time of the engine (what a full cleanup costs the next
            synthesis), or None when no load was recorded.
        lighter: A lighter configuration that fits when the request does not, or None.
    """

    action: str
    urgency: str
    reasons: tuple[Reason, ...]
    mode: str
    domain: str | None = None
    prediction: PeakPrediction | None = None
    needed_bytes: int | None = None
    headroom_bytes: int | None = None
    light_frees_bytes: int | None = None
    full_frees_bytes: int | None = None
    reload_cost_s: float | None = None
    lighter: PendingRequest | None = None

    @property
    def predicted_peak_bytes(self) -> int | None:
        """Predicted demand of the pending request (see :class:`PeakPrediction`)."""
        return None if self.prediction is None else self.prediction.peak_bytes

    @property
    def predicted_peak_upper_bytes(self) -> int | None:
        """Its conservative upper bound."""
        return None if self.prediction is None else self.prediction.peak_upper_bytes

    @property
    def rules(self) -> tuple[str, ...]:
        """The rule ids of the reasons, in order."""
        return tuple(reason.rule for reason in self.reasons)

    @property
    def should_act(self) -> bool:
        """Whether the caller runs :attr:`action` now (see :func:`should_act`)."""
        return should_act(self)

    @property
    def summary(self) -> str:
        """One line: the verdict and the first reason."""
        if self.action == "none":
            head = _("no cleanup needed") if self.urgency == "info" else _("no cleanup helps")
        elif self.urgency == "info":
            head = _("optional {action} cleanup").format(action=word(self.action))
        elif self.urgency == "required":
            head = _("{action} cleanup required").format(action=word(self.action))
        else:
            head = _("{action} cleanup advised").format(action=word(self.action))
        return (_("{head}: {reason}").format(head=head, reason=self.reasons[0].text)
                if self.reasons else head)

    def to_features(self) -> dict[str, Any]:
        """JSON-ready figures, e.g. for ``store.log_event("recommendation", features=...)``."""
        return {
            "action": self.action, "urgency": self.urgency, "mode": self.mode,
            "domain": self.domain, "rules": list(self.rules),
            "reasons": [reason.text for reason in self.reasons],
            "predicted_peak_bytes": self.predicted_peak_bytes,
            "predicted_peak_upper_bytes": self.predicted_peak_upper_bytes,
            "needed_bytes": self.needed_bytes, "headroom_bytes": self.headroom_bytes,
            "light_frees_bytes": self.light_frees_bytes,
            "full_frees_bytes": self.full_frees_bytes, "reload_cost_s": self.reload_cost_s,
        }


def should_act(rec: Recommendation, mode: str | None = None) -> bool:
    """Whether a caller in ``mode`` (default: the recommendation's) runs the action now.

    Only ``auto`` acts, and only on a ``required`` light or full cleanup.
    """
    mode = rec.mode if mode is None else mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return mode == "auto" and rec.urgency == "required" and rec.action != "none"

