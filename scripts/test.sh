#!/usr/bin/env bash
# Installs everything the tests need (the OCI registry, both virtual environments with all
# engines and test tools), then runs the checks and the whole test suite.
# Extra arguments go to pytest: scripts/test.sh -k lint
set -euo pipefail
cd "$(dirname "$0")/.."

# docker-registry: a real OCI registry for the store tests; openssl signs the bearer
# tokens of the token-auth registry test; curl is the pull benchmark's extra baseline.
missing=()
for tool in docker-registry:docker-registry openssl:openssl curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf '\n== Debian packages: %s\n' "${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

scripts/install.sh --dev

printf '\n== engines, each run for real\n' >&2
.venv/bin/mr engines --check

printf '\n== ruff, mypy, import contracts\n' >&2
.venv/bin/ruff format --check src tests bench conftest.py
.venv/bin/ruff check src tests bench conftest.py
.venv/bin/mypy
.venv/bin/lint-imports

printf '\n== pytest\n' >&2
set +e
# install.sh above built the portable llama.cpp: the portability test fails on any other.
MR_EXPECT_PORTABLE_LLAMA=1 .venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
