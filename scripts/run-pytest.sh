#!/usr/bin/env bash
# Run pytest and treat "no tests collected" (exit status 5) as a failure: a suite that
# silently finds nothing (a typo in a path, a broken conftest filter) must not pass.
#
# usage: scripts/run-pytest.sh PYTEST [PYTEST ARGS ...]
set -uo pipefail

status=0
"$@" || status=$?
if ((status == 5)); then
    echo "run-pytest: pytest collected no tests; counting that as a failure" >&2
    exit 1
fi
exit "$status"
