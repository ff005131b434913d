#!/usr/bin/env bash
# Install Triton's own CLI (npm package `triton`, 7.x) into a local node_modules, once per
# machine, for the tests that drive it against our CloudAPI. Prints the path of the binary.
#
# usage: scripts/ensure-triton.sh [DIR]   (default: $SDC_TRITON_DIR, else .cache/triton)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-${SDC_TRITON_DIR:-$root/.cache/triton}}"
bin="$dir/node_modules/.bin/triton"

if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    exit 0
fi
for tool in node npm; do
    command -v "$tool" >/dev/null || {
        echo "ensure-triton: $tool is not installed (\`make triton\` installs it with apt)" >&2
        exit 1
    }
done
mkdir -p "$dir"
# A lock, so parallel test runs do not install into one directory at the same time.
exec 9>"$dir/.install.lock"
flock 9
if ! { [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; }; then
    npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error triton@7 >&2
fi
"$bin" --version >/dev/null
echo "$bin"
