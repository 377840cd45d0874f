"""How the TTS side describes its requests to the generic policy (mirrors
``glmtts.session.SynthesisSession.pending`` and ``policy_settings``; a test there checks the
two agree). The policy tests speak in these terms because their traces are TTS traces."""

from __future__ import annotations

from typing import Any

from monitoring.policy import PendingRequest, PolicySettings

KV_LIGHTER = (("use_kv_cache", True, False, "turn the KV cache off"),)
#: What an engine that keeps per-configuration caches would declare (the old defaults).
SWITCHES = (
    ("sample_rate", "full", "engines that cache DSP tables per device only would reuse tables "
                            "of the wrong size (mel filter bank and Hann window by device)"),
    ("engine", "full", "the previous engine's model and caches serve no request of the new one"),
    ("voice", "full", "speaker caches built for the previous voice would be reused"),
    ("reference_audio", "full", "prompt caches built from the previous reference recording "
                                "would be reused"),
)
CONFIG = ("sample_rate", "use_kv_cache", "voice", "reference_audio")


def pending(engine: str, text_chars: int, device: str | None = None,
            **features: Any) -> PendingRequest:
    """A pending synthesis of ``text_chars`` characters with the TTS configuration features."""
    unknown = set(features) - set(CONFIG)
    assert not unknown, unknown
    values = {"sample_rate": None, "use_kv_cache": False, "voice": None,
              "reference_audio": None, **features}
    return PendingRequest(engine=engine, size=text_chars, device=device,
                          features=tuple(values.items()))


def settings(**kw: Any) -> PolicySettings:
    """Policy settings as a TTS session passes them (size in characters, the KV lighter, the
    switch rules above), ``kw`` overriding."""
    return PolicySettings(**{"size_feature": "text_chars", "size_unit": "characters",
                             "lighter": KV_LIGHTER, "switch_rules": SWITCHES, **kw})
