"""The interface every node backend (sim, linux, smartos) implements, and its errors.

Dicts, not objects, cross this boundary because they go straight onto the wire: ``sysinfo()``
is shaped like :class:`schemas.agent.SysinfoSchema` (Python attribute names; the agent dumps it
to the SmartOS names), ``status()`` like :class:`schemas.agent.ServerStatusSchema`, and every
``machine_*`` method returns one :class:`schemas.agent.MachineStatusSchema` dict.

Every method is idempotent, because agent tasks are acknowledged late and may be redelivered:
creating a machine that exists returns its current state, starting a running machine returns
``running``, stopping a stopped one returns ``stopped``, and destroying a machine the node does
not have returns ``destroyed``. Rebooting a stopped machine boots it.

A backend module exposes ``from_settings(settings: AgentSettings, server_uuid: str) ->
NodeBackend`` so the runner can pick it by name without knowing it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class BackendError(Exception):
    """An operation failed in a way the head node should see as ``{code, message}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MachineNotFound(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__("MachineNotFound", message)


class ImageNotFound(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__("ImageNotFound", message)


class InsufficientResources(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__("InsufficientResources", message)


class InjectedFault(BackendError):
    def __init__(self, message: str) -> None:
        super().__init__("InjectedFault", message)


@runtime_checkable
class NodeBackend(Protocol):
    server_uuid: str

    def sysinfo(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def image_ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        """Import ``image`` (an ImageSpecSchema dict) into the pool unless it is there;
        returns ``{uuid, name, version, size_mb}`` of the image in the pool."""
        ...

    def machine_create(self, spec: dict[str, Any]) -> dict[str, Any]: ...

    def machine_start(self, uuid: str) -> dict[str, Any]: ...

    def machine_stop(self, uuid: str) -> dict[str, Any]: ...

    def machine_reboot(self, uuid: str) -> dict[str, Any]: ...

    def machine_destroy(self, uuid: str) -> dict[str, Any]: ...

    def machine_load(self, uuid: str) -> dict[str, Any]: ...

    def list_machines(self) -> list[dict[str, Any]]: ...

    def machine_update(self, params: dict[str, Any]) -> dict[str, Any]:
        """Resize and/or rename (a MachineUpdateSchema dict; None fields stay as they are)."""
        ...

    def machine_update_metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        """Change tags and customer metadata (a MachineMetadataUpdateSchema dict: the
        ``remove_*`` keys go, then the ``set_*`` pairs are written); returns ``{"tags",
        "customer_metadata"}`` as the machine has them after. An empty change reads them."""
        ...

    def snapshot_create(self, uuid: str, name: str) -> dict[str, Any]:
        """Returns a SnapshotSchema dict; creating one that exists returns it."""
        ...

    def snapshot_list(self, uuid: str) -> list[dict[str, Any]]:
        """Oldest first."""
        ...

    def snapshot_rollback(self, uuid: str, name: str) -> dict[str, Any]:
        """Restore the machine's dataset to ``name`` (stopping and restarting a running
        machine); as vmadm does, snapshots newer than ``name`` are destroyed. Returns the
        machine."""
        ...

    def snapshot_delete(self, uuid: str, name: str) -> str:
        """Deleting a snapshot that does not exist succeeds; returns ``name``."""
        ...

    def image_create_from_machine(
        self, uuid: str, image: dict[str, Any], upload: dict[str, Any]
    ) -> dict[str, Any]:
        """Archive the machine's dataset, PUT it to ``upload`` (a TransferSchema dict) and
        return ``{uuid, size, sha256, compression}`` of the file sent."""
        ...

    def machine_add_nics(self, uuid: str, nics: list[dict[str, Any]],
                         routes: dict[str, str] | None = None) -> dict[str, Any]:
        """Add NICs (NicSpecSchema dicts): live into a running machine, at its next boot into
        a stopped one; a NIC whose mac the machine has already is left as it is. ``routes``
        (not None) replaces the machine's routes."""
        ...

    def machine_remove_nics(self, uuid: str, macs: list[str]) -> dict[str, Any]:
        """Remove NICs by MAC (from a running machine at once); an unknown MAC is no error."""
        ...

    def machine_update_nics(self, uuid: str, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply NicFlagsSchema changes (anti-spoofing flags, allowed_ips) to the NICs they
        name, live; a None field stays as it is. A MAC the machine lacks is MachineNotFound's
        sibling ``NicNotFound``."""
        ...

    def set_overlay_peers(self, peers: dict[str, list[str]], version: str) -> dict[str, Any]:
        """Make the node's uplinks send to exactly ``peers`` (nic tag -> underlay addresses of
        the other nodes providing it); remembered across restarts. Returns ``{"version"}``."""
        ...

    # -- migration (schemas/migrations.py has the contract) --------------------------------

    def migration_target_prepare(self, migration_uuid: str,
                                 spec: dict[str, Any]) -> dict[str, Any]:
        """A hidden, stopped copy of the machine ``spec`` describes, without a root yet;
        one that exists is returned as it is."""
        ...

    def migration_receive(self, params: dict[str, Any]) -> dict[str, Any]:
        """Offer one stream (a MigrationReceiveSchema dict) at a URL for its token; returns
        ``{"url", "expires_at"}`` at once, the receive runs when the source connects."""
        ...

    def migration_send(self, params: dict[str, Any]) -> dict[str, Any]:
        """Snapshot and stream (a MigrationSendSchema dict); returns ``{"snapshot", "parent",
        "bytes", "seconds", "received_bytes"}`` after the target's receive succeeded."""
        ...

    def migration_activate(self, uuid: str, migration_uuid: str,
                           snapshot: str) -> dict[str, Any]:
        """The hidden copy's root from the received ``snapshot``; the machine shown, stopped."""
        ...

    def migration_hide(self, uuid: str, hidden: bool) -> dict[str, Any]: ...

    def migration_cleanup(self, uuid: str, migration_uuid: str,
                          keep: str | None) -> list[str]:
        """Remove the machine's migration snapshots but ``keep``; returns the names removed."""
        ...
