"""The head node's system of record (SQLAlchemy 2). Every table has an Alembic migration."""

from __future__ import annotations

import uuid as uuidlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Account(Timestamps, Base):
    __tablename__ = "accounts"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(256))
    operator: Mapped[bool] = mapped_column(Boolean, default=False)
    # where a machine's NIC goes when its create names no network (None: first public one)
    default_network_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # the console password's argon2 hash (headnode.services.passwords); None: this account
    # cannot sign in to the console. Never part of any answer.
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True,
                                                      default=None)


class Package(Timestamps, Base):
    """An instance type (PAPI): the resources one machine gets."""

    __tablename__ = "packages"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    version: Mapped[str] = mapped_column(String(32), default="1.0.0")
    memory: Mapped[int] = mapped_column(Integer)  # MiB
    disk: Mapped[int] = mapped_column(Integer)  # MiB
    swap: Mapped[int] = mapped_column(Integer, default=0)  # MiB
    vcpus: Mapped[int] = mapped_column(Integer, default=1)
    cpu_cap: Mapped[int] = mapped_column(Integer, default=0)  # percent of one CPU; 0 = uncapped
    max_lwps: Mapped[int] = mapped_column(Integer, default=4000)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    default: Mapped[bool] = mapped_column(Boolean, default=False)
    group: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(512), default="")
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Image(Timestamps, Base):
    """An image manifest (IMGAPI v2). Its file arrives with the image store."""

    __tablename__ = "images"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64), default="1.0.0")
    os: Mapped[str] = mapped_column(String(32), default="other")
    type: Mapped[str] = mapped_column(String(32), default="zone-dataset")
    state: Mapped[str] = mapped_column(String(16), default="active")
    owner_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    size_mb: Mapped[int] = mapped_column(Integer, default=0)
    requirements: Mapped[dict[str, Any]] = mapped_column(default=dict)
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    files: Mapped[list[Any]] = mapped_column(default=list)
    #: IMGAPI's free-form tags (``default_user``: who ``triton ssh`` logs in as)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    #: how its machines boot (schemas.agent.ImageInitSchema); None: the node's default init
    init: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Server(Timestamps, Base):
    """A compute node (CNAPI). Capacity aggregates are kept on the row so the allocator reads
    one row per server, and are changed only by atomic UPDATEs (see services.capacity)."""

    __tablename__ = "servers"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | unknown
    setup: Mapped[bool] = mapped_column(Boolean, default=False)
    reserved: Mapped[bool] = mapped_column(Boolean, default=False)
    # in maintenance: takes no new machines, keeps (and runs jobs on) the ones it has
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False,
                                              server_default=false())
    headnode: Mapped[bool] = mapped_column(Boolean, default=False)
    backend: Mapped[str] = mapped_column(String(16))
    traits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sysinfo: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ram_mb: Mapped[int] = mapped_column(Integer)
    cpus: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)  # pool size
    # in flight: reserved for provisions whose jobs have not finished
    ram_inflight_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_inflight_mb: Mapped[int] = mapped_column(Integer, default=0)
    cpu_inflight: Mapped[int] = mapped_column(Integer, default=0)
    # committed: machines that exist on the node
    ram_committed_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_committed_mb: Mapped[int] = mapped_column(Integer, default=0)
    cpu_committed: Mapped[int] = mapped_column(Integer, default=0)
    machine_count: Mapped[int] = mapped_column(Integer, default=0)  # in flight + committed
    # of machine_count: with a cpu cap, and without (the two never share a server)
    capped_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    uncapped_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    images_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # imported
    pool_used_mb: Mapped[int] = mapped_column(Integer, default=0)  # as last reported
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # {machine uuid: state} as the last status report (taken at last_status_at) listed them
    reported_machines: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # where the head node reaches the node over SSH (`sdc server exec`); no host: not at all
    ssh_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ssh_port: Mapped[int] = mapped_column(Integer, default=22, server_default="22")
    ssh_user: Mapped[str] = mapped_column(String(32), default="root", server_default="root")
    # where `sdc server setup` installed the agent on the node (null: "/"; a directory when
    # test nodes share a host): an upgrade goes there
    agent_prefix: Mapped[str | None] = mapped_column(Text, nullable=True)


class RevokedNode(Base):
    """A forgotten node (``sdc server forget``): the head node refuses every message and
    heartbeat its key signs, and issues it no credentials again (a node set up anew gets a
    new uuid)."""

    __tablename__ = "revoked_nodes"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256), default="", server_default="")
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


#: machine states that hold their alias (a failed or destroyed machine frees it)
ALIAS_HOLDING_STATES = ("provisioning", "running", "stopped", "unknown")
ALIAS_HOLDING_SQL = "state IN ({})".format(", ".join(f"'{s}'" for s in ALIAS_HOLDING_STATES))
MISSING_SQL = "missing_since IS NOT NULL"


class Machine(Timestamps, Base):
    """A VM/zone (VMAPI). ``job_uuid`` is the lock: one job per machine at a time."""

    __tablename__ = "machines"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    alias: Mapped[str] = mapped_column(String(189))
    owner_uuid: Mapped[str] = mapped_column(ForeignKey("accounts.uuid"))
    package_uuid: Mapped[str] = mapped_column(ForeignKey("packages.uuid"))
    image_uuid: Mapped[str] = mapped_column(ForeignKey("images.uuid"))
    server_uuid: Mapped[str | None] = mapped_column(ForeignKey("servers.uuid"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="provisioning")
    # the state before the server went unknown, restored if it comes back unchanged
    last_known_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    cpu_cap: Mapped[int] = mapped_column(Integer, default=0)
    vcpus: Mapped[int] = mapped_column(Integer, default=1)
    max_lwps: Mapped[int] = mapped_column(Integer, default=4000)
    brand: Mapped[str] = mapped_column(String(16), default="joyent")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    customer_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: the affinity rules of its create request (as written): a migration places it by them
    affinity: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    #: the node's count of changes to the machine's metadata whose map was applied here
    #: last (None: none applied, or its node keeps no count)
    metadata_serial: Mapped[int | None] = mapped_column(Integer, nullable=True)
    job_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # a status report left it out (that report's time); the node is asked before we believe it
    missing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                           nullable=True)
    missing_asked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # when the node answered that it does not have it (our clock): its next report decides
    missing_confirmed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    nics: Mapped[list[Nic]] = relationship(lazy="selectin", order_by="Nic.created_at",
                                           viewonly=True)

    __table_args__ = (
        Index("ix_machines_owner_state", "owner_uuid", "state"),
        Index("ix_machines_server", "server_uuid"),
        # the reconciler looks for suspected machines every few seconds: only they are indexed
        Index("ix_machines_missing", "missing_since", postgresql_where=text(MISSING_SQL),
              sqlite_where=text(MISSING_SQL)),
        # CloudAPI: a name is unique per account among machines that still hold it. Only a
        # constraint closes the race between two concurrent creates with the same name.
        Index("uq_machines_owner_alias_live", "owner_uuid", "alias", unique=True,
              postgresql_where=text(ALIAS_HOLDING_SQL), sqlite_where=text(ALIAS_HOLDING_SQL)),
    )


class MachineSnapshot(Timestamps, Base):
    """A snapshot of a machine's dataset, kept on its node: queued -> created | failed,
    created -> deleted. A deleted or failed name may be taken again."""

    __tablename__ = "machine_snapshots"

    machine_uuid: Mapped[str] = mapped_column(ForeignKey("machines.uuid"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")


class Reservation(Base):
    """Capacity held on a server for one machine: ``held`` while its provision runs, then
    ``committed`` (now usage) or ``released``. The server row keeps the sums."""

    __tablename__ = "reservations"

    machine_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    server_uuid: Mapped[str] = mapped_column(ForeignKey("servers.uuid"))
    job_uuid: Mapped[str] = mapped_column(String(36))
    ram_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    cpu: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="held")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_reservations_state", "state"),)


class ServerImage(Base):
    """An image imported (or being imported) into a server's pool: the first provision of
    an image on a server adds its size to ``servers.images_mb``, the primary key makes sure
    only one does."""

    __tablename__ = "server_images"

    server_uuid: Mapped[str] = mapped_column(ForeignKey("servers.uuid"), primary_key=True)
    image_uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    size_mb: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CapacitySnapshot(Base):
    """Fleet utilization at one moment (capacity history), written periodically by beat."""

    __tablename__ = "capacity_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                               index=True)
    servers: Mapped[int] = mapped_column(Integer)
    placeable_servers: Mapped[int] = mapped_column(Integer)
    machines: Mapped[int] = mapped_column(Integer)
    ram_total_mb: Mapped[int] = mapped_column(BigInteger)
    ram_provisioned_mb: Mapped[int] = mapped_column(BigInteger)
    ram_reserved_mb: Mapped[int] = mapped_column(BigInteger)
    ram_free_mb: Mapped[int] = mapped_column(BigInteger)
    cpu_total: Mapped[int] = mapped_column(BigInteger)
    cpu_provisioned: Mapped[int] = mapped_column(BigInteger)
    cpu_reserved: Mapped[int] = mapped_column(BigInteger)
    cpu_free: Mapped[int] = mapped_column(BigInteger)
    disk_total_mb: Mapped[int] = mapped_column(BigInteger)
    disk_provisioned_mb: Mapped[int] = mapped_column(BigInteger)
    disk_reserved_mb: Mapped[int] = mapped_column(BigInteger)
    disk_free_mb: Mapped[int] = mapped_column(BigInteger)


class Job(Base):
    """A workflow job (node-workflow): chain and onerror step results with timestamps."""

    __tablename__ = "jobs"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(32))  # the workflow: provision, start, ...
    machine_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    server_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    owner_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # queued -> running -> succeeded | failed | canceled
    execution: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(16), default="chain")  # chain | onerror
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    step_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    chain_results: Mapped[list[Any]] = mapped_column(default=list)
    onerror_results: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    caller: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A cancel asked for (POST /ops/jobs/<uuid>/cancel): the engine stops the chain at its
    # next step boundary and runs the onerror chain.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                 nullable=True)
    canceled_by: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (
        Index("ix_jobs_machine", "machine_uuid"),
        Index("ix_jobs_execution_deadline", "execution", "step_deadline"),
    )


class Key(Base):
    """An account's SSH public key: signs its CloudAPI requests (UFDS sdcKey)."""

    __tablename__ = "keys"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    account_uuid: Mapped[str] = mapped_column(ForeignKey("accounts.uuid", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    fingerprint_md5: Mapped[str] = mapped_column(String(47))  # aa:bb:...
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))  # SHA256:base64
    key: Mapped[str] = mapped_column(Text)  # the OpenSSH public key line
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("account_uuid", "name", name="uq_keys_account_name"),
        UniqueConstraint("account_uuid", "fingerprint_sha256", name="uq_keys_account_sha256"),
        Index("ix_keys_account_md5", "account_uuid", "fingerprint_md5"),
    )


class Network(Base):
    """A logical network (NAPI): an IPv4 subnet on a nic tag, with a range machines get
    addresses from. Public networks are visible to every account, others to their owner."""

    __tablename__ = "networks"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    subnet: Mapped[str] = mapped_column(String(43))  # CIDR
    gateway: Mapped[str | None] = mapped_column(String(45), nullable=True)
    provision_start_ip: Mapped[str] = mapped_column(String(45))
    provision_end_ip: Mapped[str] = mapped_column(String(45))
    resolvers: Mapped[list[Any]] = mapped_column(default=list)
    vlan_id: Mapped[int] = mapped_column(Integer, default=0)
    nic_tag: Mapped[str] = mapped_column(String(64), default="external")
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_uuid: Mapped[str | None] = mapped_column(ForeignKey("accounts.uuid"), nullable=True)
    description: Mapped[str] = mapped_column(String(512), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # NAPI's: the MTU of every NIC on the network (576 to 9000)
    mtu: Mapped[int] = mapped_column(Integer, default=1500, server_default="1500")
    # {destination CIDR or address: gateway in the subnet}, the machines' static routes
    routes: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))


class Nic(Base):
    """A machine's NIC and the IP it holds on one network. The row is the IP's lease: it is
    deleted when the machine is destroyed or its provision fails, and the unique
    (network, ip) pair is what stops two provisions from taking one address."""

    __tablename__ = "nics"

    mac: Mapped[str] = mapped_column(String(17), primary_key=True)
    machine_uuid: Mapped[str] = mapped_column(ForeignKey("machines.uuid"))
    network_uuid: Mapped[str] = mapped_column(ForeignKey("networks.uuid"))
    ip: Mapped[str] = mapped_column(String(45))
    # the address as a number, so the lowest free one is found with an index
    ip_num: Mapped[int] = mapped_column(BigInteger)
    primary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # netN inside the machine: the lowest index free when the NIC was made, kept for its
    # life. Every NIC the allocation makes has one (NULL: a row written by hand, no NIC)
    interface: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # provisioning | running | stopped | removing (CloudAPI's NIC states); the server
    # default is what the NICs that existed before NICs had states were given
    state: Mapped[str] = mapped_column(String(16), default="provisioning",
                                       server_default="running")
    # vmadm's anti-spoofing flags (operator only); each lifts one of the node's rules
    allow_ip_spoofing: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=false())
    allow_mac_spoofing: Mapped[bool] = mapped_column(Boolean, default=False,
                                                     server_default=false())
    allow_dhcp_spoofing: Mapped[bool] = mapped_column(Boolean, default=False,
                                                      server_default=false())
    allow_restricted_traffic: Mapped[bool] = mapped_column(Boolean, default=False,
                                                           server_default=false())
    # more addresses or CIDRs the machine may send from on this NIC
    allowed_ips: Mapped[list[Any]] = mapped_column(default=list, server_default=text("'[]'"))
    # read-only: what a NIC's API view shows (its subnet, gateway; its machine's state)
    network: Mapped[Network] = relationship(viewonly=True)
    machine: Mapped[Machine] = relationship(viewonly=True)

    __table_args__ = (
        UniqueConstraint("network_uuid", "ip", name="uq_nics_network_ip"),
        UniqueConstraint("network_uuid", "ip_num", name="uq_nics_network_ip_num"),
        Index("uq_nics_machine_interface", "machine_uuid", "interface", unique=True),
        Index("ix_nics_machine", "machine_uuid"),
    )


#: a migration that has not ended (finalized, rolled back, aborted or failed)
UNFINISHED_MIGRATION_SQL = "finished_at IS NULL"


class Migration(Timestamps, Base):
    """A machine's move to another server (RFD 34's phases, docs/migration.md):
    begin -> sync (repeatable) -> switch -> finalize | rollback, or abort before switch.
    ``state``: running (a phase's job runs), paused (between phases), successful (switched;
    finalized when ``finished_at`` is set), failed, aborted, rolled_back. A machine has at
    most one unfinished migration (``finished_at`` null); while it has one, only the
    migration's own jobs may change it."""

    __tablename__ = "migrations"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    machine_uuid: Mapped[str] = mapped_column(ForeignKey("machines.uuid"))
    owner_uuid: Mapped[str] = mapped_column(String(36))
    source_server_uuid: Mapped[str] = mapped_column(String(36))
    target_server_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="running")
    phase: Mapped[str] = mapped_column(String(16), default="begin")
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the job of the phase that runs or ran last
    job_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    syncs: Mapped[int] = mapped_column(Integer, default=0)
    last_snapshot: Mapped[str | None] = mapped_column(String(64), nullable=True)
    total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sent_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_bps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    downtime_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: {code, message} of the failure that ended it
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: room held for the machine ({ram_mb, disk_mb, cpu}): on the target from begin (in
    #: flight, then its usage from switch), on the source from switch to finalize
    target_held: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source_held: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: the machine ran when the switch began (the target is started if so)
    was_running: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: events: {phase, state, message, bytes, total_bytes, at}
    progress_history: Mapped[list[Any]] = mapped_column(default=list)
    #: the one-time token of the stream under way (never shown)
    stream_token: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: when the switch sent the stop (unix time, the head node's clock): the downtime's start
    stop_sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                         nullable=True)

    __table_args__ = (
        Index("ix_migrations_machine", "machine_uuid", "created_at"),
        Index("ix_migrations_owner", "owner_uuid"),
        Index("uq_migrations_machine_unfinished", "machine_uuid", unique=True,
              postgresql_where=text(UNFINISHED_MIGRATION_SQL),
              sqlite_where=text(UNFINISHED_MIGRATION_SQL)),
    )
