"""Token sampling restricted to the speech-token range, as upstream's two methods do it.

- ``"topk"``: sample among the 25 most likely speech tokens.
- ``"ras"`` (repetition-aware sampling): nucleus sampling (top-p 0.8 within the top 25); when
  the pick already occurs in the last 10 generated tokens at least ``tau x window`` times, it is
  drawn again from the whole speech-token distribution instead.

Draws come from a CPU generator, so a seed gives the same tokens on every device.
"""

from __future__ import annotations

import torch

TOP_K = 25
TOP_P = 0.8
RAS_WINDOW = 10
RAS_TAU = 0.1


class SpeechTokenSampler:
    """Picks speech tokens from their logits.

    Args:
        method: ``"ras"`` or ``"topk"``.
        generator: CPU generator (re-seeded by the caller before each segment).
    """

    def __init__(self, method: str, generator: torch.Generator) -> None:
        if method not in ("ras", "topk"):
            raise ValueError(f"unknown sampling method {method!r}")
        self.method, self.generator = method, generator

    def _draw(self, probs: torch.Tensor) -> int:
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def __call__(self, logits: torch.Tensor, generated: list[int]) -> int:
        """The next speech token (0..32767), given the last position's logits over the speech
        tokens and the tokens generated so far in this segment."""
        speech = logits.float().cpu()
        values, index = torch.topk(speech, TOP_K)
        probs = torch.softmax(values, dim=-1)
        if self.method == "ras":
            cumulative = probs.cumsum(-1)
            keep = (cumulative - probs) < TOP_P  # the smallest prefix reaching top-p
            probs = torch.where(keep, probs, torch.zeros_like(probs))
        token = int(index[self._draw(probs)])
        if self.method == "ras":
            recent = generated[-RAS_WINDOW:]
            if recent.count(token) >= max(1.0, RAS_TAU * RAS_WINDOW):
                token = self._draw(torch.softmax(speech, dim=-1))
        return token
