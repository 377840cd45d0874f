"""Router: page config and navigation over pages/.

Each page draws the shared frame itself (``ui.frame.begin()`` first, ``ui.frame.end()`` last:
widget persistence and the sidebar). Drawing it from here would be the same in a browser, but
Streamlit's AppTest reruns only the page script after the first run, so the frame would vanish
from every test rerun.
"""

import os

# Idle OpenMP threads of torch sleep instead of spinning (set before torch is first imported,
# on the first synthesis): on a machine shared with other processes, spinning threads steal
# the cores the work needs (a synthesis took 2-3 times as long on a busy 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import streamlit as st

from monitoring.i18n import _
from ui import language

language.apply()
st.set_page_config(page_title=_("TTS memory dashboard"), page_icon="🔊", layout="wide")
st.navigation([
    st.Page("pages/synthesize.py", title=_("Synthesize"), icon="🔊", default=True),
    st.Page("pages/monitor.py", title=_("Monitor"), icon="📈"),
    st.Page("pages/history.py", title=_("History"), icon="🗂️"),
    st.Page("pages/batch.py", title=_("Batch"), icon="📦"),
    st.Page("pages/tune.py", title=_("Tune"), icon="🎛️"),
]).run()
