"""Host memory stays flat over many syntheses in one session (a short soak; bench/soak.py is
the long one), and the probes and the policy still work with the session's bounded heap trim.

It runs in a fresh process (real session, real voice, CPU): the RSS of the test process carries
whatever earlier tests left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = r"""
import json, sys
from glmtts.request import SynthesisRequest
from glmtts.session import SynthesisSession
from monitoring.release import TRIM_GROWTH_BYTES, malloc_trim, rss_bytes

base = ("In the early years of the twentieth century, the small town by the river became a "
        "busy center of trade. Merchants arrived every week with cloth, salt and iron tools, "
        "and the market square filled with voices from dawn until dusk. ")
# Deterministic texts of 12 to about 330 characters, long and short mixed.
texts = [base[: 12 + (i * 97) % 320].rstrip(" ,") + "." for i in range(30)]
session = SynthesisSession("piper", device="cpu", label="soak-test")
rss, trimmed = [], []
for i, text in enumerate(texts):
    outcome = session.synthesize(SynthesisRequest(text=text, seed=i))
    rss.append(rss_bytes())
    trimmed.append(outcome.record.features.get("heap_trimmed_bytes"))
estimate = session.snapshot().host_heap_releasable_bytes  # what the probe says a trim returns
before = rss_bytes()
malloc_trim()
retained = before - rss_bytes()  # what glibc still kept of freed memory
rec = session.recommend(SynthesisRequest(text="One more, please.", seed=1))
snap = session.snapshot()
full = session.cleanup("full")
print(json.dumps({"rss": rss, "trimmed": trimmed, "retained": retained, "estimate": estimate,
                  "heap_in_use": outcome.record.after.host_heap_in_use_bytes,
                  "growth": TRIM_GROWTH_BYTES, "rec_action": rec.action,
                  "rec_reasons": len(rec.reasons), "host_rss": snap.host_rss_bytes,
                  "full_loaded": session.loaded, "full_s": full.duration_s}))
"""


@pytest.mark.slow
def test_rss_stays_flat_over_thirty_syntheses() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    rss, growth = got["rss"], got["growth"]
    mib = [round(r / 2**20) for r in rss]
    # glibc keeps at most about one trim threshold of freed memory (unbounded before: over
    # 200 MiB after 30 syntheses), so RSS after 30 is close to RSS after the first few.
    assert got["retained"] < growth + 32 * 2**20, mib
    assert max(rss[5:]) < 1.3 * max(rss[:5]), mib
    assert all(isinstance(t, int) and t >= 0 for t in got["trimmed"]), got["trimmed"]
    assert any(t > 0 for t in got["trimmed"])  # a trim ran, and said what it gave back
    # the heap probe read this session's process: its live blocks, and what a trim returns
    if got["heap_in_use"] is not None:  # glibc 2.33+
        assert got["heap_in_use"] > 50 * 2**20
        assert abs(got["estimate"] - got["retained"]) < 16 * 2**20, (got["estimate"],
                                                                     got["retained"])
    # The probes and the policy still see the process as before.
    assert got["host_rss"] > 100 * 2**20
    assert got["rec_action"] in ("none", "light", "full", "restart") and got["rec_reasons"] >= 0
    assert got["full_loaded"] is False and got["full_s"] > 0
