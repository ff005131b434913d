"""What a node has and what of the agent is on it (``inspect``, one round trip), and whether
it can take the agent (``check``, naming everything missing at once)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headnode.nodesetup import probe
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import COMPLETE_MARKER, NodeLayout
from headnode.ssh.client import Connection

INSPECT_TIMEOUT = 60.0
#: a release (a virtualenv with the agent and its dependencies) takes about 150 MiB
MIN_FREE_MB = 512
#: the tools each backend runs, with where they come from
TOOLS: dict[str, dict[str, str]] = {
    "linux": {"btrfs": "apt install btrfs-progs", "runc": "apt install runc",
              "nft": "apt install nftables", "ip": "apt install iproute2"},
    "smartos": {"vmadm": "part of the SmartOS platform image",
                "zfs": "part of the SmartOS platform image"},
    "sim": {},
}
#: what a shell says of a command it cannot find
NOT_FOUND = 127


@dataclass
class NodeState:
    """What ``inspect`` found; ``before`` of a job (restore puts the node back so)."""

    prefix: str
    os: str = ""
    os_release: str = ""
    is_root: bool = False
    python: str | None = None
    venv: bool = False
    tools: dict[str, bool] = field(default_factory=dict)
    free_mb: int = 0
    init: str = "supervised"
    installed_version: str | None = None
    previous_version: str | None = None
    releases: list[str] = field(default_factory=list)
    server_uuid: str | None = None
    #: name -> digest of each config file (agent.env, ...), None where there is none
    config: dict[str, str | None] = field(default_factory=dict)
    service_installed: bool = False
    agent_running: bool = False
    #: the pool asked for ("" when none), and whether it is there (None: not asked)
    pool: str = ""
    pool_exists: bool | None = None
    #: name (layout.owned, layout.parents) -> whether it was there
    existing: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def inspect(conn: Connection, layout: NodeLayout, backend: str, pool: str = "") -> NodeState:
    args = {"prefix": layout.prefix, "tools": sorted(TOOLS.get(backend, {})), "pool": pool,
            "current": layout.current, "previous": layout.previous,
            "releases": layout.releases_dir, "marker": COMPLETE_MARKER,
            "env_file": layout.env_file, "config_files": layout.config_files,
            "pidfile": layout.pidfile, "unit_name": layout.unit_name,
            "unit_path": layout.unit_path, "owned": {**layout.owned, **layout.parents}}
    out = conn.run(["python3", "-", json.dumps(args)], INSPECT_TIMEOUT,
                   input=Path(probe.__file__).read_bytes())
    if out.exit_code == NOT_FOUND:
        return _without_python(conn, layout)
    if out.exit_code != 0:
        raise NodeSetupError("InspectFailed", f"{conn.where}: looking at the node failed "
                             f"(exit {out.exit_code}): {out.stderr[-2000:]}")
    try:
        return NodeState(prefix=layout.prefix, pool=pool, **json.loads(out.stdout))
    except (ValueError, TypeError) as exc:
        raise NodeSetupError("InspectFailed", f"{conn.where}: unexpected answer: "
                             f"{out.stdout[:200]!r}") from exc


def _without_python(conn: Connection, layout: NodeLayout) -> NodeState:
    """Enough to say what is missing: the system and who we are."""
    system = conn.run(["uname", "-s"], INSPECT_TIMEOUT)
    uid = conn.run(["id", "-u"], INSPECT_TIMEOUT)
    return NodeState(prefix=layout.prefix, os=system.stdout, is_root=uid.stdout == "0")


def check(state: NodeState, backend: str, bundle: Any = None) -> None:
    """Return if the node can take the agent; else NodeNotReady naming every missing
    thing and how to get it. ``bundle`` (an AgentBundle) adds its Python version."""
    missing = problems(state, backend, getattr(bundle, "python", None))
    if missing:
        raise NodeSetupError("NodeNotReady", "; ".join(missing))


def problems(state: NodeState, backend: str, python: str | None = None) -> list[str]:
    if backend not in TOOLS:
        return [f"unknown backend {backend!r} (one of {', '.join(sorted(TOOLS))})"]
    found = []
    wanted_os = "SunOS" if backend == "smartos" else "Linux"
    if state.os and state.os != wanted_os:
        found.append(f"the {backend} backend runs on {wanted_os}, this node runs {state.os}")
    if not state.is_root:
        found.append("not root: log in as root (--user root)")
    if state.python is None:
        found.append("python3 missing (apt install python3)")
    elif python and state.python != python:
        found.append(f"python {python} (the agent's wheels are built for it; the node has "
                     f"{state.python})")
    if state.python is not None and not state.venv:
        found.append("python3's venv missing (apt install python3-venv)")
    found += [f"{tool} missing ({source})" for tool, source in TOOLS[backend].items()
              if not state.tools.get(tool)]
    if state.python is not None and state.free_mb < MIN_FREE_MB:
        found.append(f"free disk at {state.prefix}: {state.free_mb} MiB, the agent needs "
                     f"{MIN_FREE_MB} MiB")
    if state.pool_exists is False:
        found.append(f"the pool {state.pool} missing (a btrfs file system mounted there; "
                     f"for a test node: sdc agent pool create FILE --mount {state.pool})")
    return found
