#!/usr/bin/env bash
# The demo: set-up, a lab fleet of three Debian 12 hosts, the playbooks deployed
# on it, then the dashboard and exporter serving the fleet on 127.0.0.1:9865.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export CONTAINERS_CONF="$PWD/lab/files/containers.conf"
exec mailfleet demo "$@"
