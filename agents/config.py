"""Settings of a compute-node agent (and of the mock cloud, which is many agents in one process)."""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.credentials import single_node
from schemas.settings import SettingsError, load, setting


@dataclass(frozen=True)
class AgentSettings:
    redis_url: str = setting("redis://127.0.0.1:6379/0", "Redis URL: Celery broker and heartbeats")
    server_uuid: str = setting("", "this node's UUID; empty = read or create DATA_DIR/server-uuid")
    data_dir: Path = setting(Path("~/.sdc/agent").expanduser(), "where the agent keeps its state")
    node_credentials: str = setting("", "file of the node's credentials, as `sdc server "
                                    "credentials` writes it; empty = DATA_DIR/credentials.json")
    backend: str = setting("sim", "node backend: sim, linux or smartos")
    hostname: str = setting("", "hostname to register; empty = this machine's hostname")
    heartbeat_interval: float = setting(5.0, "seconds between heartbeats")
    status_interval: float = setting(60.0, "send a status report at least this often (seconds)")
    full_report_interval: float = setting(600.0, "a status report lists every machine at least "
                                          "this often (seconds); the others list only the "
                                          "machines that changed")
    status_check_interval: float = setting(0.5, "seconds between checks for a changed status")
    concurrency: int = setting(4, "agent tasks run at the same time (worker threads)")
    log_level: str = setting("INFO", "agent log level: INFO logs every operation, WARNING "
                             "only failures (a mock cloud of hundreds of nodes)")
    sim_ram_mb: int = setting(65536, "sim backend: physical memory of a node in MiB")
    sim_cpus: int = setting(16, "sim backend: CPU cores of a node")
    sim_disk_gb: int = setting(1024, "sim backend: size of a node's pool in GiB")
    sim_latency_ms: int = setting(0, "sim backend: added latency of every operation in ms")
    sim_traits: str = setting("{}", "sim backend: traits of a node, as a JSON object")
    pool: str = setting("", "storage pool (or its mount point) the linux backend uses")
    sim_state: bool = setting(True, "sim backend: keep node state in DATA_DIR across restarts")
    sim_migration_fill: float = setting(0.1, "sim backend: the share of a machine's disk a "
                                        "migration sends (its stream's size, simulated)")
    sim_transfer_mbps: float = setting(200.0, "sim backend: MB/s a migration stream runs at")
    migration_address: str = setting("127.0.0.1", "the address other nodes reach this one at "
                                     "for migration streams (an ephemeral port on it takes "
                                     "them)")
    storage: str = setting("btrfs", "linux backend: storage driver, btrfs or zfs (then POOL "
                                    "is a dataset such as tank/sdc)")
    runc_root: Path = setting(Path("/run/sdc-runc"), "linux backend: runc's state directory")
    nic_tags: str = setting("admin,external", "nic tags this node provides, as TAG[:LINK],... "
                            "(e.g. external:eth1,internal:eth2); a tag without a link is "
                            "host-local (an etherstub)")
    nic_uplink: str = setting("auto", "linux backend: how a (nic tag, VLAN) bridge reaches "
                              "other nodes: vlan (802.1Q sub-interface of the tag's link), "
                              "vxlan (VXLAN, unicast to the tag's peers) or auto (802.1Q "
                              "where the kernel has it, else VXLAN)")
    node_netns: str = setting("", "linux backend: the network namespace (a path such as "
                              "/run/netns/node1) that holds the node's links, bridges and "
                              "filters when the agent runs outside it; empty = the agent's own")
    stop_timeout: float = setting(10.0, "linux backend: seconds between SIGTERM and SIGKILL "
                                        "when a machine stops")
    image_store_url: str = setting("", "the head node's image store (its API base URL, e.g. "
                                   "http://10.0.0.1:8080): image files are fetched from and "
                                   "uploaded to URLs under it only; empty = no transfers")
    image_store_ca: str = setting("", "PEM file of the CA(s) the image store's HTTPS certificate "
                                  "is checked with; empty = the system's CAs")


def load_settings(**overrides: Any) -> AgentSettings:
    """Settings from the environment and SDC_CONFIG, with command-line ``overrides`` on top."""
    return load(AgentSettings, **overrides)


def resolve_server_uuid(settings: AgentSettings) -> str:
    """The configured UUID, else the one stored in the data dir, else the one node of the
    credentials file, else a new one; stored in the data dir, for a node must keep its
    identity across restarts or the head node sees a new server."""
    if settings.server_uuid:
        return _checked_uuid(settings.server_uuid, "SDC_SERVER_UUID")
    path = settings.data_dir / "server-uuid"
    try:
        return _checked_uuid(path.read_text().strip(), str(path))
    except FileNotFoundError:
        pass
    # credentials issued for one new node name it
    new = single_node(settings) or str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new + "\n")
    os.replace(tmp, path)
    return new


def resolve_hostname(settings: AgentSettings) -> str:
    return settings.hostname or socket.gethostname()


def parse_traits(settings: AgentSettings) -> dict[str, Any]:
    try:
        traits = json.loads(settings.sim_traits or "{}")
    except json.JSONDecodeError as exc:
        raise SettingsError(f"SDC_SIM_TRAITS: not JSON: {exc}") from exc
    if not isinstance(traits, dict):
        raise SettingsError("SDC_SIM_TRAITS: must be a JSON object")
    return traits


NIC_TAG = re.compile(r"^[A-Za-z0-9_]{1,31}$")
#: a Linux interface name (IFNAMSIZ - 1 characters, no slash or blank)
LINK_NAME = re.compile(r"^[^/\s:]{1,15}$")


def parse_nic_tags(settings: AgentSettings) -> dict[str, str | None]:
    """``SDC_NIC_TAGS`` as {tag: link or None}, in the order given."""
    tags: dict[str, str | None] = {}
    for item in (settings.nic_tags or "").split(","):
        item = item.strip()
        if not item:
            continue
        tag, _, link = item.partition(":")
        if not NIC_TAG.match(tag):
            raise SettingsError(f"SDC_NIC_TAGS: {tag!r} is not a nic tag (1 to 31 of "
                                "letters, digits and _)")
        if link and not LINK_NAME.match(link):
            raise SettingsError(f"SDC_NIC_TAGS: {link!r} (of {tag}) is not a link name")
        if tag in tags:
            raise SettingsError(f"SDC_NIC_TAGS: {tag} is named twice")
        tags[tag] = link or None
    return tags


def _checked_uuid(text: str, where: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise SettingsError(f"{where}: not a UUID: {text!r}") from exc
