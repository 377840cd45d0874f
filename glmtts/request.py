"""What a synthesis is asked to do (:class:`SynthesisRequest`) and what it produced
(:class:`SynthesisResult`). Plain data, shared by every engine, the CLI and the UI."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glmtts.errors import InvalidRequestError
from glmtts.say import N_, Say

#: Longest text one request may carry, in characters (after clean-up). Longer texts are
#: rejected, not truncated: split them, or use batch synthesis.
MAX_TEXT_CHARS = 5000
#: Sampling methods of upstream GLM-TTS's language model ("ras": repetition-aware sampling).
SAMPLING_METHODS = ("ras", "topk")
SPEED_RANGE = (0.5, 2.0)
MAX_SEED = 2**63 - 1


def clean_text(text: object) -> tuple[str, list[str]]:
    """Normalise ``text`` for synthesis; return it with notes on what was changed.

    Control characters (other than whitespace) and lone surrogates are *stripped*, and noted;
    runs of whitespace (newlines and tabs included) become one space; Unicode is NFC-normalised.

    Raises:
        InvalidRequestError: not a string, nothing speakable left (empty, whitespace, only
            punctuation or emoji), or longer than :data:`MAX_TEXT_CHARS`.
    """
    if not isinstance(text, str):
        raise InvalidRequestError("text", Say("text must be a string, not {type}",
                                              type=type(text).__name__))
    notes: list[str] = []
    kept: list[str] = []
    dropped_ctrl = dropped_sur = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            dropped_sur += 1
        elif cat == "Cc" and not ch.isspace():
            dropped_ctrl += 1
        else:
            kept.append(ch)
    if dropped_ctrl:
        notes.append(Say("removed {count} control character(s)", count=dropped_ctrl))
    if dropped_sur:
        notes.append(Say("removed {count} invalid surrogate code point(s)", count=dropped_sur))
    cleaned = " ".join(unicodedata.normalize("NFC", "".join(kept)).split())
    if not cleaned:
        raise InvalidRequestError("text", N_("the text is empty: type something to speak"))
    if not any(ch.isalnum() for ch in cleaned):
        raise InvalidRequestError(
            "text", N_("nothing to speak: the text has no letters or digits (only "
                       "punctuation, symbols or emoji)"))
    if len(cleaned) > MAX_TEXT_CHARS:
        raise InvalidRequestError(
            "text", Say("the text has {count} characters; the limit is {limit} per request: "
                        "split it or use batch synthesis", count=f"{len(cleaned):,}",
                        limit=f"{MAX_TEXT_CHARS:,}"))
    return cleaned, notes


def check_seed(seed: object) -> int | None:
    """Return ``seed`` as an int in ``[0, 2**63)``, or None; raise on anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidRequestError("seed", Say("the seed must be a whole number, not {seed}",
                                              seed=repr(seed)))
    if not 0 <= int(seed) <= MAX_SEED:
        raise InvalidRequestError("seed", Say("the seed must be between 0 and {top}, not "
                                              "{seed}", top=MAX_SEED, seed=seed))
    return int(seed)


@dataclass(frozen=True)
class SynthesisRequest:
    """One piece of text to speak, and how.

    Attributes:
        text: What to say. Cleaned on construction (see :func:`clean_text`).
        voice: Engine-specific voice: a name, or a path to a voice file; None for the default.
        reference_audio: Path of a reference (prompt) recording, for engines that clone a voice.
        reference_text: Transcript of ``reference_audio``.
        sample_rate: Output sample rate in Hz; None for the engine's native rate.
        use_kv_cache: GLM-TTS's prompt-history cache switch (see the GLM-TTS engines).
        seed: Random seed; the same seed gives the same samples. None draws one (reported back).
        sampling_method: Token sampling of LLM-based engines: "ras" or "topk".
        speed: Speaking rate factor, 1.0 = the voice's own pace.
    """

    text: str
    voice: str | None = None
    reference_audio: Path | None = None
    reference_text: str | None = None
    sample_rate: int | None = None
    use_kv_cache: bool = False
    seed: int | None = None
    sampling_method: str = "ras"
    speed: float = 1.0
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        text, notes = clean_text(self.text)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "notes", tuple(notes))
        object.__setattr__(self, "seed", check_seed(self.seed))
        sr = self.sample_rate
        if sr is not None and (isinstance(sr, bool) or not isinstance(sr, (int, np.integer))
                               or sr <= 0):
            raise InvalidRequestError("sample_rate", Say(
                "the sample rate must be a positive whole number of Hz, not {rate}",
                rate=repr(sr)))
        if self.sampling_method not in SAMPLING_METHODS:
            raise InvalidRequestError("sampling_method", Say(
                "unknown sampling method {method}; choose one of {choices}",
                method=repr(self.sampling_method), choices=", ".join(SAMPLING_METHODS)))
        lo, hi = SPEED_RANGE
        if isinstance(self.speed, bool) or not isinstance(self.speed, (int, float)) or not (
                lo <= float(self.speed) <= hi):
            raise InvalidRequestError("speed", Say("the speed must be between {low} and "
                                                   "{high}, not {speed}", low=lo, high=hi,
                                                   speed=repr(self.speed)))
        if not isinstance(self.use_kv_cache, bool):
            raise InvalidRequestError("use_kv_cache", N_("use_kv_cache must be true or false"))
        if self.reference_audio is not None:
            object.__setattr__(self, "reference_audio", Path(self.reference_audio))

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON values (what an engine worker receives); see :meth:`from_dict`."""
        return {
            "text": self.text, "voice": self.voice,
            "reference_audio": str(self.reference_audio) if self.reference_audio else None,
            "reference_text": self.reference_text, "sample_rate": self.sample_rate,
            "use_kv_cache": self.use_kv_cache, "seed": self.seed,
            "sampling_method": self.sampling_method, "speed": self.speed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisRequest:
        """A request from :meth:`to_dict`'s output, validated again.

        Raises:
            InvalidRequestError: a field is unknown or invalid.
        """
        unknown = sorted(set(data) - {f for f in cls.__dataclass_fields__ if f != "notes"})
        if unknown:
            raise InvalidRequestError(unknown[0], Say("unknown request field {field}",
                                                      field=repr(unknown[0])))
        return cls(**data)

    def features(self) -> dict[str, Any]:
        """Generic features of this request for memory records and the policy."""
        return {
            "text_chars": len(self.text),
            "sample_rate": self.sample_rate,
            "use_kv_cache": self.use_kv_cache,
            "seed": self.seed,
            "sampling_method": self.sampling_method,
            "speed": self.speed,
            "voice": self.voice,
            "reference_audio": str(self.reference_audio) if self.reference_audio else None,
        }


@dataclass(frozen=True)
class SynthesisResult:
    """Audio an engine produced, with where the time went.

    Attributes:
        audio: Mono float32 samples in [-1, 1].
        sample_rate: Samples per second of ``audio``.
        timings: Seconds spent per phase (e.g. ``phonemize``, ``acoustic``, ``resample``).
        wall_s: Seconds from the call to its return.
        metadata: Engine facts about this run (seed used, sentences, device, ...).
    """

    audio: np.ndarray
    sample_rate: int
    timings: dict[str, float]
    wall_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate

    @property
    def rtf(self) -> float | None:
        """Real-time factor: wall time / audio duration (below 1 is faster than real time)."""
        return self.wall_s / self.duration_s if len(self.audio) else None
