#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM test cluster: slurm-wlm (slurmctld,
# slurmd, client tools), munge (authentication), slurmdbd + MariaDB (accounting, so that
# `sacct` -- the SLURM executor plugin's default status query -- works for real).
# Idempotent: does nothing when every package is already installed. Needs root (or sudo).
# Daemons are not started here (no systemd in CI sandboxes); tests/slurm/start.sh does that.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install.sh: all packages present (${PACKAGES[*]})"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install.sh: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi

# Keep maintainer scripts from starting daemons (there is no init system to own them; and
# start.sh runs its own instances on private sockets). Only remove the policy file we made.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
fi
cleanup() { if [ "$made_policy" = 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
if ! $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "install.sh: installed ${missing[*]} in $(( $(date +%s) - t0 )) s"
