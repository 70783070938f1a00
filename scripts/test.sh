#!/usr/bin/env bash
# Installs everything the tests need (the OCI registry, both virtual environments with all
# engines and test tools), then runs the checks and the whole test suite.
# Extra arguments go to pytest: scripts/test.sh -k lint
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-registry >/dev/null 2>&1; then
  printf '\n== docker-registry (a real OCI registry for the store tests)\n' >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends docker-registry
fi

scripts/install.sh --dev

printf '\n== ruff, mypy\n' >&2
.venv/bin/ruff format --check src tests bench conftest.py
.venv/bin/ruff check src tests bench conftest.py
.venv/bin/mypy

printf '\n== pytest\n' >&2
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
