"""The agent's version as sysinfo reports it ("SDC Version"): the installed ``sdc``
distribution's, so a rolling upgrade can tell when a node runs the release it was given."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def agent_version() -> str:
    try:
        return version("sdc")
    except PackageNotFoundError:  # run from a source tree never installed
        return "unknown"
