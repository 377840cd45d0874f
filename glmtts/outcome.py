"""What a synthesis session hands back: one synthesis's outcome, and the cleanup levels it
offers with what each would free and cost."""

from __future__ import annotations

from dataclasses import dataclass

from glmtts.request import SynthesisRequest, SynthesisResult
from glmtts.say import N_, Say
from monitoring.cleanup import CleanupResult
from monitoring.policy import Recommendation
from monitoring.records import EventRecord


@dataclass(frozen=True)
class CleanupOption:
    """One cleanup level as offered now: what it would free and what coming back costs.

    Attributes:
        level: ``light``, ``full`` or ``restart``.
        frees_bytes: Estimate of what it frees now (None: cannot be known before trying).
        frees: What that is, in words.
        cost_s: Measured cost of coming back: 0 for light, the last load for full, the last
            worker start plus the last load for restart (None: not measured yet).
    """

    level: str
    frees_bytes: int | None
    frees: str
    cost_s: float | None


@dataclass(frozen=True)
class SynthesisOutcome:
    """What one call of :meth:`SynthesisSession.synthesize` produced.

    Attributes:
        result: The audio and its timings.
        record: The measured synthesis event (of the attempt that succeeded).
        load: The measured load event, when this call had to load the model first.
        waited_s: Seconds spent waiting for another session's synthesis on the same device.
        attempts: Every attempt's synthesis event, failed ones included.
        recovery: What happened when the first attempt ran out of memory, in plain words;
            None when it did not.
        request: The request that produced ``result`` (lighter than asked after a recovery).
        recommendation: What the policy said before this synthesis (None when it is off).
        auto_cleanup: The cleanup that auto mode ran before this synthesis, if any.
    """

    result: SynthesisResult
    record: EventRecord
    load: EventRecord | None
    waited_s: float
    attempts: tuple[EventRecord, ...] = ()
    recovery: str | None = None
    request: SynthesisRequest | None = None
    recommendation: Recommendation | None = None
    auto_cleanup: CleanupResult | None = None


def freed_text(result: CleanupResult) -> tuple[str, ...]:
    """What a cleanup freed, figure by figure, in words (for the out-of-memory recovery)."""
    parts = [(result.nvml_process_freed_bytes, N_("GPU memory (NVML, this process)")),
             (result.torch_reserved_freed_bytes, N_("torch reserved")),
             (result.host_rss_freed_bytes, N_("host RSS"))]
    return tuple(Say("{size} MiB {what}", size=f"{v / 2**20:.1f}", what=name)
                 for v, name in parts if v is not None) or (N_("an unmeasured amount"),)


def oom_recovery(error: object, freed: CleanupResult, lighter: bool,
                 error2: object | None = None) -> Say:
    """The out-of-memory recovery in words: the first error, what the full cleanup freed, how
    the retry ran, and its end (``error2``: it ran out of memory again)."""
    told = {"error": error, "freed": freed_text(freed), "seconds": f"{freed.duration_s:.2f}",
            "change": N_("with the KV cache off") if lighter else N_("unchanged")}
    if error2 is not None:
        return Say("Out of memory on the first attempt ({error}). A full cleanup freed {freed} "
                   "in {seconds} s; the retry ran {change} and ran out of memory again "
                   "({error2}). Shorten the text or free memory held by other processes.",
                   error2=error2, **told)
    return Say("Out of memory on the first attempt ({error}). A full cleanup freed {freed} in "
               "{seconds} s; the retry ran {change} and succeeded.", **told)
