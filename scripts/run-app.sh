#!/usr/bin/env bash
# Install everything into .venv (first run only) and start the app on its embedded voice.
# Extra arguments go to `streamlit run` (e.g. --server.port 8600).
source "$(dirname "$0")/_venv.sh" requirements.txt
exec .venv/bin/python -m streamlit run streamlit_app.py --server.headless true \
  --server.address "${GLMTTS_ADDRESS:-127.0.0.1}" "$@"
