#!/usr/bin/env bash
# Install everything into .venv (first run only) and start the app on its embedded voice.
# Extra arguments go to `streamlit run` (e.g. --server.port 8600).
#
# The app has no authentication: it listens on 127.0.0.1 unless GLMTTS_ADDRESS names another
# address, and then only with --i-know-this-is-public (put a reverse proxy with authentication
# in front of it, e.g. nginx with auth_basic or an OAuth proxy).
set -euo pipefail
address="${GLMTTS_ADDRESS:-127.0.0.1}"
public_ok=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--i-know-this-is-public" ]; then public_ok=1; else args+=("$arg"); fi
done
case "$address" in
  127.*|localhost|::1|"[::1]") ;;
  *)
    if [ "$public_ok" != 1 ]; then
      echo "error: GLMTTS_ADDRESS=$address would expose the app, which has no authentication," >&2
      echo "to every machine that can reach this one. Put a reverse proxy with authentication" >&2
      echo "(nginx auth_basic, an OAuth proxy) in front of it, then run again with" >&2
      echo "--i-know-this-is-public; or leave GLMTTS_ADDRESS unset (127.0.0.1)." >&2
      exit 2
    fi
    echo "warning: serving on $address without authentication (--i-know-this-is-public)" >&2
    ;;
esac
source "$(dirname "$0")/_venv.sh" requirements.txt
exec .venv/bin/python -m streamlit run streamlit_app.py --server.headless true \
  --server.address "$address" ${args[@]+"${args[@]}"}
