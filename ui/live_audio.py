"""The Synthesize page's live player: the first sentences play while the later ones are made.

What Streamlit (1.67) allows: a script run sends each element to the browser as soon as it is
written, so an ``st.audio`` written from the engine's per-sentence callback (:mod:`glmtts.stream`,
which runs in the script's own thread) reaches the browser while the synthesis goes on, and
``autoplay`` plays it (the click on *Synthesize* is the user gesture browsers ask for). What it
does not allow: adding samples to an audio element that plays, or starting one when another
ends. So the live player is one slot whose content is replaced only when needed:

- the first sentence is written (autoplay) as soon as it exists;
- a later sentence is written (with any others made meanwhile) only once the player has played
  everything it was given (estimated from the clock: the sentences' durations), so a slow
  engine's sentences follow each other, and a fast one's do not interrupt the first;
- when the last sentence is done and some audio was never given to the player, it is replaced
  by the rest of the whole audio from the point reached (a short hiccup at that moment).

The progress bar says "sentence k of n" after each one. An engine that gives no sentences
(one in a worker process) plays nothing before its end; the page says which it was.

:class:`Follower` is the decision alone (no Streamlit), so it can be tested with plain numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st

from glmtts.audio import wav_bytes
from glmtts.stream import Resume
from monitoring.i18n import _
from ui.format import fmt_seconds

#: Seconds between writing an element and the browser playing it, allowed for when the
#: player's position is estimated (better to repeat a little than to skip a word).
LATENCY_S = 0.25


@dataclass(frozen=True)
class Play:
    """What to give the player: ``samples[start:stop]`` of everything made so far."""

    start: int
    stop: int


class Follower:
    """Where the live player is, and what to give it next.

    Args:
        rate: Sample rate of the pieces.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.made = 0  # samples made so far
        self.given_from = 0  # the player holds samples [given_from, given_to)
        self.given_to = 0
        self.given_at: float | None = None  # when it was given them

    def heard(self, now: float) -> int:
        """The sample the player has reached by ``now`` (estimated; at least where its
        content starts, at most where it ends)."""
        if self.given_at is None:
            return 0
        played = max(0.0, now - self.given_at - LATENCY_S)
        return min(self.given_to, self.given_from + round(played * self.rate))

    def piece(self, samples: int, now: float) -> Play | None:
        """A piece of ``samples`` samples was made at ``now``: what to play, if anything."""
        self.made += samples
        if self.given_at is not None and self.heard(now) < self.given_to:
            return None  # still playing: do not interrupt it
        return self._give(self.given_to, now)

    def finish(self, total: int, now: float) -> Play | None:
        """The synthesis ended with ``total`` samples: the rest from the point reached, if the
        player was not given all of it."""
        self.made = total
        if self.given_to >= total:
            return None
        start = self.heard(now) if self.given_at is not None else 0
        return self._give(start, now)

    def _give(self, start: int, now: float) -> Play:
        self.given_from, self.given_to, self.given_at = start, self.made, now
        return Play(start, self.made)


class LivePlayer:
    """The live player and the per-sentence progress of one synthesis on the page.

    Use :meth:`listener` and :meth:`progress` with :func:`glmtts.stream.streaming` around the
    synthesis, then :meth:`finish` with the result.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = clock()
        self.first_audio_s: float | None = None
        self.whole_s: float | None = None
        self.sentences: int | None = None
        # a new identity per synthesis: Streamlit autoplays an element only the first time
        # its identity (its audio, its options) is drawn, and the same text and seed make
        # the same audio
        runs = st.session_state["_live_runs"] = st.session_state.get("_live_runs", 0) + 1
        self._alt = _("Live audio of synthesis {number}").format(number=runs)
        self._progress = st.progress(0.0, text=_("Making the first sentence…"))
        self._slot = st.empty()
        self._note = st.empty()
        self._pieces: list[np.ndarray] = []
        self._follower: Follower | None = None
        self._resume = Resume()

    def listener(self, samples: np.ndarray, rate: int, index: int) -> None:
        if not self._resume.is_new(index):  # an out-of-memory retry starts over
            return
        now = self.clock()
        if self.first_audio_s is None:
            self.first_audio_s = now - self.started
        self._pieces.append(samples)
        if self._follower is None:
            self._follower = Follower(rate)
        play = self._follower.piece(len(samples), now)
        if play is not None:
            self._write(np.concatenate(self._pieces), play, rate)

    def progress(self, done: int, total: int | None) -> None:
        if done <= (self.sentences or 0):
            return  # a retry repeating sentences already counted
        self.sentences = done
        if total:
            self._progress.progress(min(1.0, done / total), text=_(
                "Sentence {done} of {total} made; the first ones play while the others are "
                "made").format(done=done, total=total))
        else:
            self._progress.progress(0.5, text=_("Sentence {done} made").format(done=done))

    def finish(self, audio: np.ndarray, rate: int) -> None:
        """The synthesis ended: give the player the rest, say what happened."""
        now = self.clock()
        self.whole_s = now - self.started
        if self._follower is None:  # no piece came: an engine that gives none
            self._progress.empty()
            self._note.caption(_("This engine gives its audio only when the whole text is "
                                 "done (it runs in a worker process, or does not speak "
                                 "sentence by sentence): nothing could play earlier."))
            return
        self._progress.progress(1.0, text=_("All {count} sentence(s) made").format(
            count=self.sentences))
        play = self._follower.finish(len(audio), now)
        if play is not None:
            self._write(audio, play, rate)
        ready = _("Live player: the first sentence was ready to play {first} after pressing "
                  "Synthesize").format(first=fmt_seconds(self.first_audio_s))
        if (self.sentences or 0) <= 1:
            how = _("; the text is one sentence, so nothing could come before the whole.")
        elif play is not None:
            how = _(", while the others were made; when the last one was done, the player "
                    "went on with the rest from where it was (Streamlit cannot add audio to a "
                    "player that plays: it is replaced at that point).")
        else:
            how = _(", while the others were made; each one that followed was given to the "
                    "player when the ones before had played.")
        self._note.caption(ready + how + " " + _("The whole file is below."))

    def abandon(self) -> None:
        """The synthesis failed: take the progress bar and the live player away."""
        self._progress.empty()
        self._slot.empty()
        self._note.empty()

    def _write(self, samples: np.ndarray, play: Play, rate: int) -> None:
        self._slot.audio(wav_bytes(samples[play.start:play.stop], rate), format="audio/wav",
                         autoplay=True, alt=self._alt)
