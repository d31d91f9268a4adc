#!/usr/bin/env bash
# Install everything mailfleet needs on a Debian 12 machine, as root: Debian
# packages (scripts/apt-packages.txt), the project's venv (.venv) and the lab's
# base image. Idempotent and quick when nothing is missing; never relies on a
# cache being there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (apt-get, podman networks with fixed addresses)" >&2
  exit 1
fi

# -- Debian packages ---------------------------------------------------------
mapfile -t wanted < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' scripts/apt-packages.txt | awk '{print $1}')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# Some of these ship daemons the project runs itself, by hand, on its own ports
# (Dovecot for the reliability suite, Prometheus and blackbox_exporter for tests
# and benches, apt-cacher-ng and knot on each lab's gateway). Their system
# services must not start on install: a policy-rc.d that denies every start,
# only while apt runs (an operator's own policy-rc.d is kept and restored).
declare -A service_of=([apt-cacher-ng]=apt-cacher-ng [dovecot-imapd]=dovecot [knot]=knot
                       [prometheus]=prometheus
                       [prometheus-blackbox-exporter]=prometheus-blackbox-exporter)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
  restore_policy() {
    if [ -n "$saved" ]; then mv "$saved" "$policy"; else rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# mailfleet bootstrap: no service starts during apt-get install\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  restore_policy
  trap - EXIT
  # ...and the ones installed now stay off at boot: the project starts its own
  # instances. (A service the machine already had is left as its admin set it.)
  for pkg in "${missing[@]}"; do
    svc=${service_of[$pkg]:-}
    [ -n "$svc" ] || continue
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  done
fi

# -- Python venv -------------------------------------------------------------
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.mailfleet-deps
want=$(cat pyproject.toml scripts/constraints.txt requirements.yml molecule/requirements.yml \
         scripts/install_collections.py scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing mailfleet and its test dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/pip install -q --disable-pip-version-check -c scripts/constraints.txt -e '.[test]'
  # The collections of requirements.yml (and Molecule's), into the venv; Galaxy is not
  # reachable from here, so they come from PyPI (see the script).
  say "installing the Ansible collections of requirements.yml into .venv"
  .venv/bin/python scripts/install_collections.py requirements.yml molecule/requirements.yml
  echo "$want" > "$stamp"
fi

# -- sslyze, for the tests' TLS profile checks, in a venv of its own: it pins
# cryptography below the release mailfleet runs with.
if [ ! -x .venv/sslyze/bin/sslyze ]; then
  say "installing sslyze into .venv/sslyze"
  "$python" -m venv .venv/sslyze
  .venv/sslyze/bin/pip install -q --disable-pip-version-check 'sslyze==6.3.1'
fi

# -- lab base image (cached in podman's store; rebuilt when missing) -----------
.venv/bin/python -m mailfleet.lab.image
