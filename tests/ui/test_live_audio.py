"""The Synthesize page's live player: what to give the player and when (plain numbers), and the
page with the real voice (AppTest): per-sentence progress, a live player that autoplays beside
the whole file, the caption that says which it was, and the time to first audio in the memory
card; an engine in a worker process says that nothing could play before the end."""

from __future__ import annotations

import pytest

from ui.live_audio import LATENCY_S, Follower, Play

RATE = 1000  # samples per second, to keep the numbers readable


def test_the_first_piece_plays_at_once_and_a_playing_one_is_not_interrupted() -> None:
    follow = Follower(RATE)
    assert follow.piece(2000, now=10.0) == Play(0, 2000)  # 2 s of audio, given at 10 s
    # the second piece comes while the first still plays: kept for later
    assert follow.piece(1000, now=11.0) is None
    # a third comes once the player has played its 2 s: it gets both waiting pieces
    assert follow.piece(500, now=12.0 + LATENCY_S) == Play(2000, 3500)
    # the end, with everything given: nothing to replace
    assert follow.finish(3500, now=20.0) is None


def test_at_the_end_the_rest_goes_on_from_the_point_reached() -> None:
    follow = Follower(RATE)
    follow.piece(3000, now=0.0)
    assert follow.piece(3000, now=1.0) is None
    # done 1.5 s after the first piece was given: the player is about 1.25 s in
    play = follow.finish(7000, now=1.5)
    assert play == Play(round((1.5 - LATENCY_S) * RATE), 7000)
    assert follow.heard(now=100.0) == 7000  # and it ends with the whole audio


def test_the_point_reached_never_leaves_what_the_player_holds() -> None:
    follow = Follower(RATE)
    assert follow.heard(now=5.0) == 0  # nothing given yet
    follow.piece(1000, now=5.0)
    assert follow.heard(now=5.0) == 0  # not started (the browser's latency)
    assert follow.heard(now=60.0) == 1000


def _synthesize(at, text: str):
    at.text_area(key="text").set_value(text)
    at.button(key="synthesize").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_page_plays_sentences_as_they_are_made(app) -> None:
    _synthesize(app, "One sentence here. Two sentences now. And a third one to finish.")
    progress = [p.proto.text for p in app.get("progress")]
    assert progress == ["All 3 sentence(s) made"]
    live, whole = app.get("audio")
    assert live.proto.autoplay and live.proto.alt == "Live audio of synthesis 1"
    assert not whole.proto.autoplay
    captions = [c.value for c in app.main.caption]
    assert any(c.startswith("Live player: the first sentence was ready to play")
               and "The whole file is below." in c for c in captions), captions
    assert any(c.startswith("Time to first audio:") for c in captions), captions
    # a rerun keeps the whole file and the card, not the live player (it would play again)
    app.run()
    assert len(app.get("audio")) == 1 and not app.get("audio")[0].proto.autoplay
    assert any(c.value.startswith("Time to first audio:") for c in app.main.caption)
    # the same text again plays again: a new identity for the live player
    _synthesize(app, "One sentence here. Two sentences now. And a third one to finish.")
    assert app.get("audio")[0].proto.alt == "Live audio of synthesis 2"


def test_one_sentence_says_nothing_could_come_before_the_whole(app) -> None:
    _synthesize(app, "Just one sentence.")
    assert [p.proto.text for p in app.get("progress")] == ["All 1 sentence(s) made"]
    assert any("the text is one sentence" in c.value for c in app.main.caption)


@pytest.mark.slow
def test_an_engine_in_a_worker_says_it_plays_only_at_the_end(app) -> None:
    app.toggle(key="isolate_piper").set_value(True).run()
    _synthesize(app, "One sentence here. Two sentences now.")
    assert not app.get("progress")
    assert len(app.get("audio")) == 1  # the whole file only
    captions = [c.value for c in app.main.caption]
    assert any("gives its audio only when the whole text is done" in c for c in captions)
    assert not any(c.startswith("Time to first audio:") for c in captions)
