"""The first page a visitor opens waits for nothing it does not draw (bench/first_paint.py
measures the time; this checks the cause, whatever the machine's speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=180)
at.run()
first = dict(exception=[str(e.value) for e in at.exception],
             torch='torch' in sys.modules,
             model=[m.value for m in at.sidebar.markdown if 'Model' in m.value],
             rates=at.selectbox(key='sample_rate').options)
at.button(key='synthesize').click().run()
after = dict(exception=[str(e.value) for e in at.exception], torch='torch' in sys.modules,
             audio=len([a for a in at.get('audio') if not a.proto.autoplay]))  # whole file
from ui.state import app_resources
app_resources().sampler.stop()
print(json.dumps([first, after]))
"""


def test_the_synthesize_page_draws_before_torch_is_imported(tmp_path: Path) -> None:
    """The page lists the engines, creates the default one and draws its options, the sidebar
    and the policy's advice without importing torch (~1.5 s, more on a busy machine); the
    first synthesis imports it and loads the model."""
    env = {**os.environ, "GLMTTS_DB": str(tmp_path / "events.sqlite3"),
           "OMP_NUM_THREADS": "1"}
    env.pop("GLMTTS_HOME", None)
    done = subprocess.run([sys.executable, "-c", CODE, str(ROOT / "streamlit_app.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, after = json.loads(done.stdout.splitlines()[-1])
    assert first["exception"] == [] and after["exception"] == []
    assert first["model"] and "not loaded" in first["model"][0]
    assert first["rates"] == ["22,050 Hz (native)", "24,000 Hz", "32,000 Hz"]  # the voice's
    assert first["torch"] is False
    assert after["torch"] is True and after["audio"] == 1
