"""The agent as a service on a node: a systemd unit where the node runs systemd, else a
process of its own (``sdc agent supervise``, detached) that restarts the agent when it dies.
deploy/sdc-agent.service is ``unit_text(NodeLayout("/"))``."""

from __future__ import annotations

import time

from headnode.nodesetup import remote
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.ssh.client import Connection

SYSTEMD = "systemd"
SUPERVISED = "supervised"
#: how long the agent gets to stop (its unit's TimeoutStopSec) before it is killed
STOP_WAIT = 30.0
POLL = 0.3

UNIT = """\
[Unit]
Description=SDC compute-node agent (Celery worker on queue cn.<server_uuid>)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# Root: the agent creates datasets, mounts and containers on this node.
User=root
# Written by `sdc server setup` (0600: the Redis password): SDC_REDIS_URL, SDC_SERVER_UUID,
# SDC_BACKEND, SDC_POOL, SDC_NIC_TAGS, the image store, the data dir and credentials file.
EnvironmentFile={env_file}
# `current` links the release that runs; an upgrade switches it, then restarts the unit.
ExecStart={sdc_command} agent run
Restart=always
RestartSec=2
# Every process of the unit is stopped with it: the agent, its Celery worker child and
# anything they run. KillMode=process used to leave the worker child running after a
# SIGKILL or an OOM kill of the agent, and the restarted agent made two agents for one
# server (each with its own view of the node: their status reports marked running machines
# gone). The agent also locks the node (DATA_DIR/locks/<server_uuid>.lock) and its worker
# dies with it, so a second agent cannot start even outside systemd.
# Machines are not the unit's processes: runc puts each container in a control group of its
# own, next to the unit's (cgroup v2, the default since Debian 11; see deploy/README.md), so
# they outlive an agent restart.
KillMode=control-group
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def unit_text(layout: NodeLayout) -> str:
    return UNIT.format(env_file=layout.env_file, sdc_command=layout.sdc_command)


def supervise_argv(layout: NodeLayout) -> list[str]:
    return [layout.sdc_command, "agent", "supervise", "--detach", "--pidfile",
            layout.pidfile, "--log", layout.log_file, "--env-file", layout.env_file]


def install_unit(conn: Connection, layout: NodeLayout) -> bool:
    """Write the unit if it differs from ours and enable it; whether it changed."""
    text = unit_text(layout).encode()
    if remote.digests(conn, [layout.unit_path]).get(layout.unit_path) == \
            remote.digest_of(text):
        return False
    conn.put(text, layout.unit_path, 0o644)
    remote.run_ok(conn, ["systemctl", "daemon-reload"], "ServiceFailed")
    remote.run_ok(conn, ["systemctl", "enable", layout.unit_name], "ServiceFailed")
    return True


def remove_unit(conn: Connection, layout: NodeLayout) -> None:
    conn.run(["systemctl", "disable", "--now", layout.unit_name], remote.SHORT)
    remote.remove(conn, layout.unit_path)
    remote.run_ok(conn, ["systemctl", "daemon-reload"], "ServiceFailed")


def start(conn: Connection, layout: NodeLayout, init: str) -> None:
    """(Re)start the agent of the release ``current`` links."""
    if init == SYSTEMD:
        remote.run_ok(conn, ["systemctl", "restart", layout.unit_name], "ServiceFailed",
                      timeout=STOP_WAIT + remote.SHORT)
        return
    stop(conn, layout, init)
    remote.run_ok(conn, ["mkdir", "-p", layout.data_dir, layout.log_file.rpartition("/")[0]],
                  "ServiceFailed")
    remote.run_ok(conn, supervise_argv(layout), "ServiceFailed")


def stop(conn: Connection, layout: NodeLayout, init: str) -> None:
    if init == SYSTEMD:
        conn.run(["systemctl", "stop", layout.unit_name], STOP_WAIT + remote.SHORT)
        return
    pid = _supervisor_pid(conn, layout)
    if pid is None or not _supervisor_holds(conn, layout):
        # a stale pidfile: its pid may be another process's by now
        remote.remove(conn, layout.pidfile)
        return
    # The supervisor stops the agent and its process group on SIGTERM, then exits.
    conn.run(["kill", "-TERM", pid], remote.SHORT)
    deadline = time.monotonic() + STOP_WAIT
    while _supervisor_holds(conn, layout):
        if time.monotonic() > deadline:
            conn.run(["kill", "-KILL", "--", f"-{pid}"], remote.SHORT)
            break
        time.sleep(POLL)
    remote.remove(conn, layout.pidfile)


def _supervisor_holds(conn: Connection, layout: NodeLayout) -> bool:
    """A live supervisor holds its pidfile's lock (a dead one, even unreaped, does not)."""
    return remote.exists(conn, layout.pidfile) and conn.run(
        ["flock", "--nonblock", "--shared", layout.pidfile, "true"], remote.SHORT).exit_code != 0


def _supervisor_pid(conn: Connection, layout: NodeLayout) -> str | None:
    out = conn.run(["cat", layout.pidfile], remote.SHORT)
    pid = out.stdout.strip()
    if out.exit_code != 0 or not pid:
        return None
    if not pid.isdigit():
        raise NodeSetupError("ServiceFailed", f"{layout.pidfile} holds no pid")
    return pid
