#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint, then pytest (unit tests,
# lab integration tests, Molecule scenarios, promtool and browser tests).
# Runs on its own lab ("ci", 10.77.100.0/24), fresh each run, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export CONTAINERS_CONF="$PWD/lab/files/containers.conf"
export MAILFLEET_LAB=${MAILFLEET_LAB:-ci} MAILFLEET_LAB_SUBNET=${MAILFLEET_LAB_SUBNET:-10.77.100.0/24}
export MAILFLEET_REQUIRE_LAB=1 MAILFLEET_REQUIRE_BROWSER=1
bash scripts/lint.sh
mailfleet lab down >/dev/null   # a lab left by an interrupted run
trap 'mailfleet lab down >/dev/null 2>&1 || true' EXIT
mkdir -p artifacts
status=0
pytest -ra --durations=20 -p no:cacheprovider --junitxml=artifacts/junit.xml "$@" || status=$?
echo "whole suite: $(( $(date +%s) - started ))s"
exit "$status"
