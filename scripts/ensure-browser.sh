#!/usr/bin/env bash
# What the console's browser tests need, once per machine: Debian's Chromium (apt; the
# browser Playwright downloads itself cannot be fetched here, so the tests point Playwright
# at /usr/bin/chromium) and axe-core (npm, into a local node_modules) for the accessibility
# check. Prints the path of axe.min.js.
#
# usage: scripts/ensure-browser.sh [DIR]   (default: $SDC_AXE_DIR, else .cache/axe)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${SDC_AXE_DIR:-$root/.cache/axe}}"
axe="$dir/node_modules/axe-core/axe.min.js"

# Debian 12 packages npm apart from nodejs; a nodejs that brings its own npm is left as it is.
"$root/scripts/ensure-apt.sh" /usr/bin/chromium:chromium node:nodejs npm:npm >&2

if [[ ! -s "$axe" ]]; then
    mkdir -p "$dir"
    # A lock, so parallel test runs do not install into one directory at the same time.
    exec 9>"$dir/.install.lock"
    flock 9
    if [[ ! -s "$axe" ]]; then
        npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error \
            axe-core@4 >&2
    fi
fi
[[ -s "$axe" ]] || { echo "ensure-browser: $axe is missing after npm install" >&2; exit 1; }
/usr/bin/chromium --version 2>/dev/null >&2  # its launcher warns about /dev/shm on stderr
echo "$axe"
