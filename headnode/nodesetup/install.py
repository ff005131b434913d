"""Putting a release of the agent and its configuration on a node, each step safe to run
again: a release is installed once (complete only when its marker, written last, is there),
a config file is written only when its content changed (the one it replaces kept aside for
``restore``). ``activate`` and ``restore`` (activation.py) switch what runs."""

from __future__ import annotations

import time
from typing import Any

from headnode.nodesetup import remote
from headnode.nodesetup.activation import activate as activate
from headnode.nodesetup.activation import restore as restore
from headnode.nodesetup.bundle import AgentBundle
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.nodesetup.nodeconfig import NodeConfig
from headnode.ssh.client import Connection

VENV_TIMEOUT = 180.0
PIP_TIMEOUT = 600.0
SECRET_MODE = 0o600


def upload(conn: Connection, layout: NodeLayout, bundle: AgentBundle) -> dict[str, Any]:
    """The bundle's wheels to PREFIX/opt/sdc/agent/wheels/<version> (unless installed)."""
    if remote.exists(conn, layout.marker(bundle.version)):
        return {"changed": False, "version": bundle.version, "files": 0}
    began = time.monotonic()
    target = layout.wheels(bundle.version)
    remote.run_ok(conn, ["mkdir", "-p", target], "UploadFailed")
    size = sum(conn.put(bundle.directory / name, f"{target}/{name}", 0o644)
               for name in bundle.wheels)
    return {"changed": True, "version": bundle.version, "files": len(bundle.wheels),
            "bytes": size, "seconds": round(time.monotonic() - began, 1)}


def install(conn: Connection, layout: NodeLayout, bundle: AgentBundle) -> dict[str, Any]:
    """A virtualenv at releases/<version> with the agent installed from the uploaded wheels
    only (no index: nodes need no PyPI); a no-op when that release is complete."""
    version = bundle.version
    if remote.exists(conn, layout.marker(version)):
        return {"changed": False, "version": version}
    began = time.monotonic()
    release, wheels = layout.release(version), layout.wheels(version)
    if not remote.exists(conn, f"{wheels}/{bundle.wheels[0]}"):
        raise NodeSetupError("InstallFailed", f"{conn.where}: the wheels of {version} are "
                             "not on the node: upload them first")
    remote.remove(conn, release)  # what an interrupted install left
    remote.run_ok(conn, ["mkdir", "-p", layout.releases_dir], "InstallFailed")
    remote.run_ok(conn, ["python3", "-m", "venv", release], "InstallFailed", VENV_TIMEOUT)
    # The node's own pip configuration (an index, constraints) has no say: these wheels only.
    remote.run_ok(conn, ["env", "PIP_CONFIG_FILE=/dev/null", f"{release}/bin/python", "-m",
                         "pip", "install", "--quiet", "--no-index", "--disable-pip-version-"
                         "check", "--find-links", wheels, f"sdc=={version}"],
                  "InstallFailed", PIP_TIMEOUT)
    _check_installed(conn, release, version)
    conn.put(f"{version}\n".encode(), layout.marker(version), 0o644)
    remote.remove(conn, wheels)
    return {"changed": True, "version": version,
            "seconds": round(time.monotonic() - began, 1)}


def _check_installed(conn: Connection, release: str, version: str) -> None:
    out = remote.run_ok(conn, [f"{release}/bin/python", "-c", "import importlib.metadata as m;"
                               " print(m.version('sdc'))"], "InstallFailed")
    if out.stdout.strip() != version:
        raise NodeSetupError("InstallFailed", f"{conn.where}: {release} has sdc "
                             f"{out.stdout.strip()!r}, not {version}")


def remove_release(conn: Connection, layout: NodeLayout, version: str) -> dict[str, Any]:
    """Remove a release neither ``current`` nor ``previous`` links."""
    release = layout.release(version)
    for name, link in (("current", layout.current), ("previous", layout.previous)):
        out = conn.run(["readlink", "-f", link], remote.SHORT)
        if out.exit_code == 0 and out.stdout.strip() == release:
            raise NodeSetupError("ReleaseInUse", f"{version} is the node's {name} release")
    existed = remote.exists(conn, release)
    remote.remove(conn, release, layout.wheels(version))
    return {"changed": existed, "version": version}


def write_config(conn: Connection, layout: NodeLayout, config: NodeConfig) -> dict[str, Any]:
    """agent.env, credentials.json and the CA (0600), each only when its content changed;
    a replaced or removed file is kept aside as .NAME.before (for restore)."""
    # 0700 when setup makes it; one that exists keeps its mode (an all-in-one head node's
    # /etc/sdc holds sdc.env too): the files themselves are 0600 from their first byte.
    remote.run_ok(conn, ["mkdir", "-p", layout.etc_dir.rpartition("/")[0]], "ConfigFailed")
    if not remote.exists(conn, layout.etc_dir):
        remote.run_ok(conn, ["mkdir", "-m", "0700", layout.etc_dir], "ConfigFailed")
    paths = layout.config_files
    present = remote.digests(conn, list(paths.values()))
    done = {}
    for name, content in config.files(layout).items():
        path, backup = paths[name], layout.backup(name)
        have = present.get(path)
        if (content is None and have is None) or \
                (content is not None and have == remote.digest_of(content)):
            remote.remove(conn, backup)  # nothing to put back from this run
            done[name] = "unchanged"
            continue
        if have is None:
            remote.remove(conn, backup)
        else:
            remote.run_ok(conn, ["cp", "-p", path, backup], "ConfigFailed")
        if content is None:
            remote.remove(conn, path)
            done[name] = "removed"
        else:
            conn.put(content, path, SECRET_MODE)
            done[name] = "written"
    return {"changed": any(v != "unchanged" for v in done.values()), "files": done}
