"""The policy's advice reads the same wherever it is shown: the sidebar (its box and its "Why"
figures) and the HTTP service's ``/v1/memory`` (its JSON) render one recommendation, and the
advice's sentence quotes the very figures both show.

The recommendation is the one the sidebar computed and drew in a real AppTest run (the embedded
voice, two real syntheses for a history, a real snapshot); the service's own renderer and
response model turn that same object into ``/v1/memory``'s JSON."""

from __future__ import annotations

import re

from monitoring.units import fmt_bytes
from service.app import _recommendation_json
from service.schemas import RecommendationOut


def _synthesize(at, text: str) -> None:
    at.text_area(key="text").set_value(text)
    at.button(key="synthesize").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_the_sidebar_and_v1_memory_show_the_same_advice_and_figures(app) -> None:
    _synthesize(app, "Hello from the test. Second sentence here.")
    _synthesize(app, "Another sentence, a little longer than the first one was.")
    _synthesize(app, "And a third, for the advice to predict this one.")
    rec = app.session_state["_advice"][1]  # what the sidebar drew on this run
    served = RecommendationOut.model_validate(_recommendation_json(rec)).model_dump()

    # the box: the one-line summary, word for word
    (box,) = [*app.sidebar.info, *app.sidebar.warning, *app.sidebar.error]
    assert box.value == served["summary"] == rec.summary
    # the "Why" list: every reason's sentence, as the service lists them
    why = [m.value for m in app.sidebar.markdown if m.value.startswith("- **")]
    assert why == [f"- **{r['rule']}** ({r['urgency']}): {r['text']}"
                   for r in served["reasons"]]
    # the "Why" figures: the numbers the JSON carries, in the same units
    (figures,) = [c.value for c in app.sidebar.caption if c.value.startswith("predicted peak:")]
    shown = dict(part.split(": ", 1) for part in figures.split(" · "))
    for label, field in (("predicted peak", "predicted_peak_bytes"),
                         ("upper bound", "predicted_peak_upper_bytes"),
                         ("needed", "needed_bytes"), ("headroom", "headroom_bytes"),
                         ("full cleanup frees", "full_frees_bytes")):
        assert shown[label] == fmt_bytes(served[field]), label
    # the sentence quotes those figures: one predicted peak with its range, then what the
    # request takes from the free memory (the "needed" and "headroom" figures)
    assert served["predicted_peak_bytes"] is not None and served["needed_bytes"] is not None
    (fits,) = [r["text"] for r in served["reasons"] if r["rule"] == "headroom.fits"]
    peak = re.search(r"predicted peak (.+?) \(at most (.+?)\) for", fits)
    takes = re.search(r"It takes (.+?) of the (.+?) free (?:in RAM|on the GPU)", fits)
    assert peak and takes, fits
    assert peak.groups() == (shown["predicted peak"], shown["upper bound"])
    assert takes.groups() == (shown["needed"], shown["headroom"])
