#!/usr/bin/env bash
# Every linter the project holds itself to; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
echo "==> ruff"; ruff check .
echo "==> mypy"; mypy
echo "==> yamllint"; yamllint -s .
echo "==> ansible-lint (production profile)"; ansible-lint -q
