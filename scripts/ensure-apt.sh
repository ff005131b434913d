#!/usr/bin/env bash
# Install the Debian packages whose programs are missing, and nothing else.
#
# usage: scripts/ensure-apt.sh CHECK:PACKAGE [CHECK:PACKAGE ...]
#   CHECK is a command name looked up on PATH (redis-server) or an absolute path, which may
#   be a glob (/usr/lib/postgresql/*/bin/initdb: Debian keeps the server off PATH).
#
# Already-present programs cost nothing: apt-get update runs once, and only when something
# has to be installed, so a machine that has everything never touches the network.
set -euo pipefail

missing=()
for pair in "$@"; do
    check=${pair%%:*}
    package=${pair#*:}
    if [[ -z $check || -z $package || $check == "$pair" ]]; then
        echo "ensure-apt: bad argument '$pair' (want CHECK:PACKAGE)" >&2
        exit 2
    fi
    if [[ $check == /* ]]; then
        # compgen -G expands the glob without eval and fails when nothing matches.
        if compgen -G "$check" >/dev/null; then continue; fi
    elif command -v "$check" >/dev/null 2>&1; then
        continue
    fi
    echo "ensure-apt: $check not found, will install $package"
    missing+=("$package")
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo_cmd=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        echo "ensure-apt: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Packages such as openssh-server and redis-server start their system service when installed
# (sshd on every interface): the tests and the demo start their own, on loopback. While we
# install, policy-rc.d tells the package scripts not to start any service (unless the machine
# has a policy of its own), and a system sshd installed here is not enabled for the next boot.
policy=${SDC_POLICY_RC:-/usr/sbin/policy-rc.d}  # another path only for its own test
own_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee "$policy" >/dev/null
    "${sudo_cmd[@]}" chmod 755 "$policy"
    own_policy=1
fi
cleanup() { if ((own_policy)); then "${sudo_cmd[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
"${sudo_cmd[@]}" apt-get update
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo_cmd[@]}" systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
fi
