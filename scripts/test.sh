#!/usr/bin/env bash
# The README's test command: set up, then run the whole test suite (real Procgen, real local Ray).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# genie play's browser test drives Debian's chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser test (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } \
      || echo "warning: could not install chromium; the browser test will fail"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "installing chromium for the browser test (sudo apt-get)"
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
      || echo "warning: could not install chromium; the browser test will fail"
  else
    echo "note: no chromium, so the browser test will fail; install it with: sudo apt-get install -y chromium"
  fi
fi
export GENIE_REQUIRE_BROWSER=1  # the browser test fails, not skips, when it cannot run
# Two pytest workers, one test file each at a time (a file's module fixtures, such as its Ray cluster, stay in one
# worker): many tests wait on Ray (nodes starting, health checks, jobs), so two keep both cores busy.
# GENIE_TEST_WORKERS=0 runs them one by one in this process. --no-loadscope-reorder: xdist 3.6+ otherwise hands out
# the files with the most tests first, not tests/conftest.py's longest first (the 2-minute pipeline study, 6 tests,
# started in the last quarter of a 39-minute CI run, its last 10 minutes).
exec .venv/bin/python -m pytest -n "${GENIE_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
