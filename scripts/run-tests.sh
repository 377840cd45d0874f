#!/usr/bin/env bash
# Install everything (app, test tools, Chromium for the browser tests, Prometheus for the scrape
# test) and run every test.
# Extra arguments go to pytest (e.g. -k engine, -m "not slow").
source "$(dirname "$0")/_venv.sh" requirements-dev.txt
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v chromium >/dev/null 2>&1; then
    echo "installing Chromium for the browser tests (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if ! command -v prometheus >/dev/null 2>&1; then
    echo "installing Prometheus for the scrape test (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends prometheus >/dev/null
  fi
fi
.venv/bin/python -m ruff check .
# Several tests run a server process beside the test process: one torch thread each keeps two
# cores from being oversubscribed (run times then vary ten-fold). The app itself is unaffected.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Two pytest workers (pytest-xdist), whole files per worker (module fixtures start once): most
# tests wait on a server, a browser or a subprocess, so two at a time take about half as long.
# GLMTTS_TEST_WORKERS=0 runs them in this process, one after another.
workers="${GLMTTS_TEST_WORKERS:-2}"
if [ "$workers" = 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
