"""A job's params, typed: one frozen dataclass per workflow that has params.

The service that starts a job writes ``X(...).to_json()`` into ``jobs.params``; the steps
read ``X.of(ctx.job)``. The stored JSON keeps the key names and values it had when params
were plain dicts, so a job written before an upgrade still runs after it. Reading ignores
the keys the engine adds (``chain``, ``onerror``) and, as before, lets an optional key
(``held``, a metadata change's sets and removals) be missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Self

from headnode.store.models import Job


@dataclass(frozen=True)
class JobParams:
    """What every workflow's params share: to JSON, and back from a stored job."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, params: Mapping[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for f in fields(cls):
            optional = f.default is not MISSING or f.default_factory is not MISSING
            if not optional:
                values[f.name] = params[f.name]  # a required key: KeyError, as before
            elif params.get(f.name) is not None:
                values[f.name] = params[f.name]
        return cls(**values)

    @classmethod
    def of(cls, job: Job) -> Self:
        return cls.from_json(job.params or {})


@dataclass(frozen=True)
class ProvisionParams(JobParams):
    package: str  # the package's name
    image: str  # the image's uuid


@dataclass(frozen=True)
class ResizeParams(JobParams):
    package: str  # the new package's uuid
    package_name: str
    ram_mb: int
    disk_mb: int
    cpu_cap: int
    vcpus: int
    max_lwps: int
    #: new minus old, per resource (``ram_mb``, ``disk_mb``, ``cpu``)
    delta: dict[str, int]
    #: the growth the request reserved on the server (``delta``'s positive parts)
    held: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RenameParams(JobParams):
    alias: str
    old_alias: str


@dataclass(frozen=True)
class SnapshotParams(JobParams):
    snapshot: str  # the snapshot's name


@dataclass(frozen=True)
class CreateImageParams(JobParams):
    image_uuid: str  # the image the job makes (state ``creating`` until it succeeds)


@dataclass(frozen=True)
class PurgeParams(JobParams):
    machine: str  # the orphan's uuid on the job's server


@dataclass(frozen=True)
class MetadataParams:
    """A tags or metadata change. Its keys name the column it changes (``set_tags``,
    ``remove_customer_metadata``), so reading it needs the column
    (``headnode.services.machine_meta.METADATA_WORKFLOWS`` maps the workflow to it)."""

    column: str
    set_: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {f"set_{self.column}": self.set_, f"remove_{self.column}": self.remove}

    @classmethod
    def from_json(cls, params: Mapping[str, Any], column: str) -> MetadataParams:
        return cls(column, params.get(f"set_{column}") or {},
                   params.get(f"remove_{column}") or [])

    @classmethod
    def of(cls, job: Job, column: str) -> MetadataParams:
        return cls.from_json(job.params or {}, column)


@dataclass(frozen=True)
class NicParams(JobParams):
    """A NIC job (``add_nic``, ``remove_nic``, ``update_nic``): the NIC's MAC and, for an
    update, the flags it sets (``allow_*``, ``allowed_ips``)."""

    mac: str
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSetupParams(JobParams):
    """A ``server_setup`` or ``agent_upgrade`` job: where the node is and what goes on it.
    Never a secret: the node's credentials and Redis URL are made by the step that writes
    them, in the worker."""

    host: str
    port: int = 22
    user: str = "root"
    #: the node's install prefix ("/" on a real node)
    prefix: str = "/"
    backend: str = "linux"
    pool: str = ""
    nic_tags: str = ""
    hostname: str = ""
    #: first contact: trust (and record) the node's host key
    accept_new_host_key: bool = False
    #: the agent version to install (None: a wheel built from the head node's checkout)
    version: str | None = None
    #: an upgrade's server (a setup learns its uuid from the node, or makes one)
    server_uuid: str | None = None
    #: an upgrade back to the release the node ran before (``previous``)
    rollback: bool = False


@dataclass(frozen=True)
class MigrationParams(JobParams):
    """A migration phase's job (``migrate_*``): which migration it drives."""

    migration: str  # the migration's uuid
