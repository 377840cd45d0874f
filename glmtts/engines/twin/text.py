"""The twin's text side: segments of 30-60 characters, text tokens, forced speech lengths, and
the prompt-history ("KV cache") plan of a request.

Everything here is pure Python on lengths, so the plan of a request is known before any model
runs; the memory estimate uses the same plan as the engine.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

from glmtts.engines.twin.config import SPEECH_TOKENS_PER_SECOND, TEXT_VOCAB

#: Segment bounds of upstream's ``split_by_len(text, 30, 60)``.
MIN_SEGMENT_CHARS = 30
MAX_SEGMENT_CHARS = 60
#: Upstream's prompt-history cap: history speech tokens + the new segment's estimate <= 750.
HISTORY_CAP_TOKENS = 750
#: Speaking rate used to estimate an audio duration from text (latin script).
CHARS_PER_SECOND = 14.5
#: A CJK character takes about as long to say as this many latin characters.
CJK_WEIGHT = 3.5
#: Upstream bounds the generated length by 2x .. 20x the text-token count.
MIN_TOKENS_PER_TEXT_TOKEN = 2
MAX_TOKENS_PER_TEXT_TOKEN = 20

_BREAKS = re.compile(r"(?<=[.!?;:,。！？；：，、])\s*")
_PIECES = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"


def _hard_split(piece: str, limit: int) -> list[str]:
    """Cut ``piece`` into chunks of at most ``limit`` characters, at spaces where possible."""
    out: list[str] = []
    current = ""
    for word in piece.split(" "):
        while len(word) > limit:  # a single word longer than a segment
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= limit:
            current = candidate
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    return out


def _join(a: str, b: str) -> str:
    return f"{a} {b}" if a and b else a or b


def split_segments(text: str, lo: int = MIN_SEGMENT_CHARS, hi: int = MAX_SEGMENT_CHARS
                   ) -> list[str]:
    """Split ``text`` into segments of ``lo``..``hi`` characters, preferring punctuation.

    Clauses are packed greedily up to ``hi`` characters. A segment still shorter than ``lo``
    takes words from the next clause; a short last segment joins the previous one or takes
    words from it. Only a text shorter than ``lo`` (or a word longer than ``hi``) gives a
    segment outside the bounds.
    """
    pieces: list[str] = []
    for clause in _BREAKS.split(text.strip()):
        if clause:
            pieces.extend(_hard_split(clause, hi) if len(clause) > hi else [clause])
    segments: list[str] = []
    current = ""
    for piece in pieces:
        if len(_join(current, piece)) <= hi:
            current = _join(current, piece)
            continue
        words = piece.split(" ")
        if len(current) < lo:  # too short to close: fill it from this clause
            while words and len(_join(current, words[0])) <= hi:
                current = _join(current, words.pop(0))
        segments.append(current)
        current = " ".join(words)
    if current and segments and len(current) < lo:
        previous = segments.pop()
        if len(_join(previous, current)) <= hi:
            current = _join(previous, current)
        else:  # move words from the previous segment until both are long enough
            head, tail = previous.split(" "), current.split(" ")
            while len(head) > 1 and len(" ".join(tail)) < lo and len(
                    " ".join(head[:-1])) >= lo:
                tail.insert(0, head.pop())
            segments.append(" ".join(head))
            current = " ".join(tail)
    if current:
        segments.append(current)
    return segments


def text_token_ids(text: str) -> list[int]:
    """Stand-in text tokenizer: about one token per 4 latin letters, one per CJK character,
    digit run or punctuation mark (close to what a tiktoken-style tokenizer gives). Ids are a
    stable hash of the piece, below :data:`TEXT_VOCAB`."""
    ids: list[int] = []
    for match in _PIECES.finditer(text):
        piece = match.group()
        chunks = [piece[i:i + 4] for i in range(0, len(piece), 4)] if piece.isascii() else [
            piece]
        ids.extend(zlib.crc32(chunk.encode()) % TEXT_VOCAB for chunk in chunks)
    return ids


def estimate_seconds(text: str, speed: float = 1.0) -> float:
    """Seconds of speech ``text`` takes: ~14.5 latin characters per second, a CJK character
    counting as 3.5 of them; divided by ``speed``."""
    weight = sum(CJK_WEIGHT if _is_cjk(ch) else 1.0 for ch in text)
    return weight / CHARS_PER_SECOND / speed


def speech_token_count(text: str, text_tokens: int, speed: float = 1.0) -> int:
    """The forced number of speech tokens for ``text``: 25 per estimated second, within
    upstream's bounds of 2x..20x the text-token count."""
    wanted = math.ceil(estimate_seconds(text, speed) * SPEECH_TOKENS_PER_SECOND)
    lo = MIN_TOKENS_PER_TEXT_TOKEN * max(1, text_tokens)
    hi = MAX_TOKENS_PER_TEXT_TOKEN * max(1, text_tokens)
    return min(max(wanted, lo), hi)


@dataclass(frozen=True)
class SegmentPlan:
    """One segment's LLM call.

    Attributes:
        index: Position of the segment in the text.
        text: The segment.
        text_tokens: Its text-token count.
        new_tokens: Speech tokens to generate (forced).
        history: Indices of earlier segments whose text and speech prompt this one (the
            prompt-history cache; empty when it is off).
        prompt_text_tokens: Text tokens before this segment's own: the reference transcript's
            plus the history's.
        prompt_speech_tokens: Speech tokens in the prompt: the reference audio's plus the
            history's.
    """

    index: int
    text: str
    text_tokens: int
    new_tokens: int
    history: tuple[int, ...]
    prompt_text_tokens: int
    prompt_speech_tokens: int

    @property
    def input_tokens(self) -> int:
        """LLM input length: all text tokens, ``<|begin_of_audio|>``, the prompt speech."""
        return self.prompt_text_tokens + self.text_tokens + 1 + self.prompt_speech_tokens

    @property
    def sequence_tokens(self) -> int:
        """Longest sequence the LLM holds for this segment (input + generated)."""
        return self.input_tokens + self.new_tokens


def plan_segments(text: str, reference_text_tokens: int, reference_speech_tokens: int, *,
                  use_history: bool, speed: float = 1.0, cap: int = HISTORY_CAP_TOKENS
                  ) -> list[SegmentPlan]:
    """The LLM calls of one request.

    With ``use_history`` (upstream's "KV cache" switch) each segment is prompted with the
    reference plus earlier segments' text and speech tokens; the oldest are dropped (the
    reference is always kept) until history speech + reference speech + the new segment's
    tokens fit in ``cap``.
    """
    segments = split_segments(text)
    counts = [len(text_token_ids(s)) for s in segments]
    news = [speech_token_count(s, c, speed) for s, c in zip(segments, counts, strict=True)]
    plans: list[SegmentPlan] = []
    for i, (seg, n_text, n_new) in enumerate(zip(segments, counts, news, strict=True)):
        history = list(range(i)) if use_history else []
        while history and (reference_speech_tokens + sum(news[j] for j in history) + n_new
                           > cap):
            history.pop(0)
        plans.append(SegmentPlan(
            index=i, text=seg, text_tokens=n_text, new_tokens=n_new, history=tuple(history),
            prompt_text_tokens=reference_text_tokens + sum(counts[j] for j in history),
            prompt_speech_tokens=reference_speech_tokens + sum(news[j] for j in history)))
    return plans
