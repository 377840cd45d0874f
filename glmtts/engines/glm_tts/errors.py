"""Typed errors of the ``glm-tts`` engine (subclasses of :class:`glmtts.errors.GlmTtsError`)."""

from __future__ import annotations

from glmtts.errors import GlmTtsError


class CheckoutError(GlmTtsError):
    """The GLM-TTS checkout is not configured, missing or incomplete (the message says what)."""


class UpstreamError(GlmTtsError):
    """Upstream GLM-TTS code could not be imported, or failed (the message names the step)."""
