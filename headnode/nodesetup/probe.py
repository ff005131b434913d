"""Run ON THE NODE by ``python3 - ARGS`` (its source sent on stdin): what the node has and
what of the agent is there, printed as one JSON object. Standard library only, and nothing
of ours: the node may have no agent yet. Reads no secret (config files are digested)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys

#: where an administrator's tools live, searched besides PATH (a non-login PATH may omit it)
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def found(tool: str) -> bool:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(tool, path=path) is not None


def free_mb(path: str) -> int:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize // (1024 * 1024)


def release_of(link: str, marker: str) -> str | None:
    """The version a link (current, previous) points at, if that release is complete."""
    if not os.path.islink(link):
        return None
    target = os.path.realpath(link)
    return os.path.basename(target) if os.path.exists(os.path.join(target, marker)) else None


def complete_releases(releases: str, marker: str) -> list[str]:
    if not os.path.isdir(releases):
        return []
    return sorted(v for v in os.listdir(releases)
                  if os.path.exists(os.path.join(releases, v, marker)))


def digest(path: str) -> str | None:
    try:
        with open(path, "rb") as source:
            return hashlib.sha256(source.read()).hexdigest()[:16]
    except FileNotFoundError:
        return None


def env_value(path: str, key: str) -> str | None:
    try:
        with open(path) as source:
            for line in source:
                name, _, value = line.strip().partition("=")
                if name == key:
                    return value
    except FileNotFoundError:
        pass
    return None


def supervised_running(pidfile: str) -> bool:
    """Whether a supervisor holds its pidfile's lock (`sdc agent supervise`): a stale file,
    or a dead supervisor not yet reaped, holds none."""
    try:
        with open(pidfile) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def systemd_running(unit: str) -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", unit],
                          check=False).returncode == 0


def probe(args: dict) -> dict:
    init = "systemd" if os.path.isdir("/run/systemd/system") else "supervised"
    running = (systemd_running(args["unit_name"]) if init == "systemd"
               else supervised_running(args["pidfile"]))
    return {
        "os": platform.system(),
        "os_release": platform.release(),
        "is_root": os.geteuid() == 0,
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "venv": importlib.util.find_spec("ensurepip") is not None,
        "tools": {tool: found(tool) for tool in args["tools"]},
        "free_mb": free_mb(args["prefix"]),
        "init": init,
        "installed_version": release_of(args["current"], args["marker"]),
        "previous_version": release_of(args["previous"], args["marker"]),
        "releases": complete_releases(args["releases"], args["marker"]),
        "server_uuid": env_value(args["env_file"], "SDC_SERVER_UUID"),
        "config": {name: digest(path) for name, path in args["config_files"].items()},
        "service_installed": os.path.exists(args["unit_path"]),
        "agent_running": running,
        "existing": {name: os.path.exists(path) for name, path in args["owned"].items()},
        "pool_exists": os.path.isdir(args["pool"]) if args["pool"].startswith("/") else None,
    }


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
