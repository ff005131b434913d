"""A LinuxBackend from the agent's settings: its storage driver, its node network, and the
head node as the listener of its guests' metadata changes."""

from __future__ import annotations

from pathlib import Path

from agents import migration_stream, tasks
from agents.backends.linux.backend import LinuxBackend
from agents.backends.linux.network import NodeNetwork
from agents.backends.linux.runtime import netns_dir
from agents.backends.linux.storage import BtrfsStorage, Storage, ZfsStorage
from agents.config import AgentSettings, parse_nic_tags, parse_traits, resolve_hostname
from schemas.settings import SettingsError


def make_storage(settings: AgentSettings) -> Storage:
    if not settings.pool:
        raise SettingsError("SDC_POOL is not set (make one with `sdc agent pool create`)")
    if settings.storage == "btrfs":
        return BtrfsStorage(Path(settings.pool))
    if settings.storage == "zfs":
        return ZfsStorage(settings.pool, settings.data_dir / "zfs-state")
    raise SettingsError(f"SDC_STORAGE: unknown storage driver {settings.storage!r} (btrfs or zfs)")


def from_settings(settings: AgentSettings, server_uuid: str) -> LinuxBackend:
    storage = make_storage(settings)
    migration_stream.configure(settings.migration_address)
    network = NodeNetwork(parse_nic_tags(settings), settings.nic_uplink, storage.state_dir,
                          netns_dir(settings.runc_root),
                          node_netns=Path(settings.node_netns) if settings.node_netns else None)
    return LinuxBackend(
        server_uuid,
        resolve_hostname(settings),
        storage,
        runc_root=settings.runc_root,
        stop_timeout=settings.stop_timeout,
        traits=parse_traits(settings),
        network=network,
        metadata_listener=tasks.send_machine_metadata,
        image_store_url=settings.image_store_url,
        image_store_ca=settings.image_store_ca,
        migration_progress=tasks.send_migration_progress,
    )
