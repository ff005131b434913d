"""The wire contract between the head node and compute-node agents.

Head node -> agent: Celery task ``agent.<op>`` on queue ``cn.<server_uuid>``, called as
``(server_uuid, params, reply)``. ``params`` is validated by the schema named in
:data:`AGENT_TASKS`; ``reply`` is ``None`` or a :class:`ReplyToSchema` dict. When ``reply`` is
given the agent answers by sending ``events.task_reply(reply, outcome)`` to the head node's
queue, where ``outcome`` is a :class:`TaskOutcomeSchema` dict. Agent tasks are idempotent and
acknowledged late: a redelivered task must be harmless. They carry no message priority (an
agent reads only its queue's base list).

Agent -> head node: on queue :data:`NODES_QUEUE` (node events, batched apart from the jobs:
workflows/event_consumer.py) ``events.server_sysinfo(sysinfo)`` once at start (registration),
``events.server_status(status)`` on change and at least every ``status_interval`` seconds (a
delta report, ``full: false``, lists only the machines that changed; a full one, every
``full_report_interval`` seconds and when asked, lists them all), and
``events.machine_metadata(change)`` when a guest changed its metadata; on queue
:data:`HEADNODE_QUEUE` (a job's progress) ``events.task_reply(reply, outcome)``. An older
agent sends them all to :data:`HEADNODE_QUEUE`, where the workflow worker still takes them.
Heartbeats are not Celery messages: the agent writes ``HSET`` :data:`HEARTBEAT_KEY`
``<server_uuid> <unix time>`` every 5 s, so a fleet of thousands costs Redis one small write
each and the database nothing.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from schemas.ids import uuid_string
from schemas.image_manifest import FILE_FORMATS
from schemas.migrations import MIGRATION_TASKS
from schemas.nics import (
    MachineNicsAddSchema,
    MachineNicsRemoveSchema,
    MachineNicsUpdateSchema,
    NicSpecSchema,
    NicTagUplinkSchema,
    OverlayPeersSchema,
    ipv4_address,
    ipv4_address_or_network,
)

HEADNODE_QUEUE = "headnode"
#: node events (sysinfo, status reports, guest metadata): consumed by ``sdc headnode events``
NODES_QUEUE = "nodes"
HEARTBEAT_KEY = "sdc:heartbeats"
#: the key of a sysinfo (as the node sends it, and servers keep it) that gives the agent's
#: version: a rolling upgrade waits for the new one there
SYSINFO_VERSION = "SDC Version"

MACHINE_STATES = ("provisioning", "running", "stopped", "failed", "destroyed", "unknown")
#: states a node itself can report for one of its machines
NODE_MACHINE_STATES = ("provisioning", "running", "stopped", "failed")


def agent_queue(server_uuid: str) -> str:
    return f"cn.{server_uuid}"


def agent_task(op: str) -> str:
    return f"agent.{op}"


class ReplyToSchema(Schema):
    job_uuid = fields.String(required=True)
    step = fields.Integer(required=True)
    attempt = fields.Integer(required=True)
    #: set when the task is ``agent.batch``: how many of the job's steps it carries
    batch = fields.Integer(load_default=None)


class TaskErrorSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


class TaskOutcomeSchema(Schema):
    server_uuid = fields.String(required=True)
    ok = fields.Boolean(required=True)
    result = fields.Dict(load_default=None, allow_none=True)
    error = fields.Nested(TaskErrorSchema, load_default=None, allow_none=True)
    started_at = fields.Float(required=True)
    finished_at = fields.Float(required=True)


class TransferSchema(Schema):
    """Where a node fetches (GET) or sends (PUT) a file on the head node's image store: a URL
    signed for this one node and image (the head node checks the signature and expiry), plus
    any headers to send. A node takes only a URL under its ``SDC_IMAGE_STORE_URL``
    (agents/backends/transfer.py): this schema cannot know where that is."""

    url = fields.String(required=True)
    #: header names are tokens and values hold no control character (no CR LF: no header
    #: of the task's making can add another)
    headers = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9-]{1,64}\Z")),
                          values=fields.String(validate=validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z")),
                          load_default=dict)


class ImageFileSchema(Schema):
    sha256 = fields.String(required=True)
    size = fields.Integer(required=True)  # bytes of the file as stored (compressed)
    compression = fields.String(load_default="gzip",
                                validate=validate.OneOf(["gzip", "bzip2", "xz", "none"]))
    #: tar or zfs (schemas.image_manifest); left out: what image_manifest.file_format derives
    format = fields.String(validate=validate.OneOf(FILE_FORMATS))


def _image_files(files: list[dict[str, Any]]) -> None:
    """Each file's fields that a node acts on (its compression picks tar's flags) are valid."""
    errors = {i: e for i, f in enumerate(files)
              if (e := ImageFileSchema(partial=True, unknown=EXCLUDE).validate(f))}
    if errors:
        raise ValidationError(errors)


#: signals an image may name as its init's stop signal
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGPWR", "SIGUSR1", "SIGUSR2",
                "SIGRTMIN+3")


class ImageInitSchema(Schema):
    """How a machine of an image boots (the manifest's ``init``): an OS image names its own
    init (``kind`` "os", e.g. ``/sbin/init``-style), an application image an entrypoint with
    its arguments and environment. A stop sends ``stop_signal`` to that process and waits
    ``stop_timeout`` seconds for the machine's own shutdown before killing it. An image
    without ``init`` boots the node's default init (a shell that sleeps)."""

    kind = fields.String(load_default="application",
                         validate=validate.OneOf(["os", "application"]))
    args = fields.List(fields.String(validate=validate.Length(min=1)), required=True,
                       validate=validate.Length(min=1))
    env = fields.List(fields.String(validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]*=")),
                      load_default=list)
    workdir = fields.String(load_default="/", validate=validate.Regexp(r"^/"))
    stop_signal = fields.String(load_default="SIGTERM", validate=validate.OneOf(STOP_SIGNALS))
    #: at most 90 s: a stop step of the head node waits 120 s for its node
    stop_timeout = fields.Integer(load_default=30, validate=validate.Range(min=1, max=90))


class ImageSpecSchema(Schema):
    """What a node needs to import an image into its pool."""

    uuid = uuid_string(required=True)
    name = fields.String(required=True)
    version = fields.String(load_default="")
    os = fields.String(load_default="other")
    type = fields.String(load_default="zone-dataset")
    size_mb = fields.Integer(load_default=0)
    #: ImageFileSchema dicts (kept whole: a manifest's other keys travel with them)
    files = fields.List(fields.Dict(), load_default=list,
                        validate=_image_files)
    requirements = fields.Dict(load_default=dict)
    #: IMGAPI's free-form tags (``default_user``: who ``triton ssh`` logs in as)
    tags = fields.Dict(load_default=dict)
    init = fields.Nested(ImageInitSchema, load_default=None, allow_none=True)
    #: absent for images without a file (placeholders, the sim backend)
    source = fields.Nested(TransferSchema, load_default=None, allow_none=True)


class MachineSpecSchema(Schema):
    """Everything an agent needs to create one machine; the package is already resolved."""

    uuid = uuid_string(required=True)
    alias = fields.String(required=True)
    owner_uuid = uuid_string(required=True)
    image_uuid = uuid_string(required=True)
    ram_mb = fields.Integer(required=True, validate=validate.Range(min=1))
    disk_mb = fields.Integer(required=True, validate=validate.Range(min=1))
    cpu_cap = fields.Integer(load_default=0)
    vcpus = fields.Integer(load_default=1)
    max_lwps = fields.Integer(load_default=4000)
    tags = fields.Dict(load_default=dict)
    #: customer metadata, ``root_authorized_keys``, ``user-script`` and ``user-data`` included
    metadata = fields.Dict(load_default=dict)
    #: the image's init (None: the node's default)
    init = fields.Nested(ImageInitSchema, load_default=None, allow_none=True)
    nics = fields.List(fields.Nested(NicSpecSchema), load_default=list)
    #: vmadm's VM-level ``resolvers`` (the machine's /etc/resolv.conf) and ``routes``
    #: (destination CIDR or address -> gateway address)
    resolvers = fields.List(fields.String(validate=ipv4_address), load_default=list)
    routes = fields.Dict(keys=fields.String(validate=ipv4_address_or_network),
                         values=fields.String(validate=ipv4_address), load_default=dict)


class MachineRefSchema(Schema):
    uuid = uuid_string(required=True)


class EnsureImageSchema(Schema):
    image = fields.Nested(ImageSpecSchema, required=True)


class MachineUpdateSchema(Schema):
    """Resize (any of ram_mb, disk_mb, cpu_cap, vcpus, max_lwps) and/or rename (alias)."""

    uuid = uuid_string(required=True)
    alias = fields.String(load_default=None, allow_none=True)
    ram_mb = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    disk_mb = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    cpu_cap = fields.Integer(load_default=None, allow_none=True)
    vcpus = fields.Integer(load_default=None, allow_none=True)
    max_lwps = fields.Integer(load_default=None, allow_none=True)


class MachineMetadataUpdateSchema(Schema):
    """Change a machine's tags and customer metadata (vmadm update's names): the keys in
    ``remove_*`` go first, then the ``set_*`` pairs are written. The result is
    ``{"tags": {...}, "customer_metadata": {...}, "serial": N}``, both as the node holds them
    after; ``serial`` (absent from nodes that keep none) counts the changes of that
    machine's metadata on its node, so the head node keeps the newest of a reply and a
    :class:`MachineMetadataEventSchema`."""

    uuid = uuid_string(required=True)
    set_customer_metadata = fields.Dict(keys=fields.String(), values=fields.String(),
                                        load_default=dict)
    remove_customer_metadata = fields.List(fields.String(), load_default=list)
    set_tags = fields.Dict(keys=fields.String(), load_default=dict)
    remove_tags = fields.List(fields.String(), load_default=list)


def apply_metadata_change(values: dict[str, Any], remove: list[str],
                          set_: dict[str, Any]) -> dict[str, Any]:
    """What a MachineMetadataUpdateSchema change makes of ``values``: without the keys in
    ``remove``, then with the pairs of ``set_`` (the head node never names one key in both).
    Nodes and the head node both apply a change with this."""
    gone = set(remove)
    return {**{k: v for k, v in values.items() if k not in gone}, **set_}


class MachineMetadataEventSchema(Schema):
    """``events.machine_metadata``: a machine's guest changed its customer metadata
    (``mdata-put``/``mdata-delete``); the map as its node holds it after the change."""

    server_uuid = fields.String(required=True)
    uuid = fields.String(required=True)
    customer_metadata = fields.Dict(keys=fields.String(), required=True)
    serial = fields.Integer(required=True, validate=validate.Range(min=0))


class SnapshotRefSchema(Schema):
    uuid = uuid_string(required=True)  # the machine
    #: one path component on a node (``zones/<uuid>@<name>``): no slash, never ``.`` or ``..``
    name = fields.String(required=True,
                         validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z"))


class CreateImageSchema(Schema):
    """Snapshot a machine, archive it and PUT the file to ``upload``."""

    uuid = uuid_string(required=True)  # the machine
    image = fields.Nested(ImageSpecSchema, required=True)
    upload = fields.Nested(TransferSchema, required=True)


class SimFaultsSchema(Schema):
    """Fault-injection switches of the ``sim`` backend (tests and chaos drills)."""

    fail = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    latency_ms = fields.Dict(keys=fields.String(), values=fields.Integer(), load_default=dict)


class BatchItemSchema(Schema):
    op = fields.String(required=True)
    params = fields.Dict(load_default=dict)


class BatchSchema(Schema):
    """Several operations in one message, run in order until one fails. The result is
    ``{"outcomes": [TaskOutcome, ...]}``, one per operation that ran: a workflow whose
    consecutive agent steps do not need each other's results sends them together and
    saves a round trip through both queues per step (see workflows.engine)."""

    ops = fields.List(fields.Nested(BatchItemSchema), required=True,
                      validate=validate.Length(min=1))


class EmptySchema(Schema):
    pass


#: op name -> schema of its ``params``
AGENT_TASKS: dict[str, type[Schema]] = {
    "image_ensure_present": EnsureImageSchema,
    "machine_create": MachineSpecSchema,
    "machine_start": MachineRefSchema,
    "machine_stop": MachineRefSchema,
    "machine_reboot": MachineRefSchema,
    "machine_destroy": MachineRefSchema,
    "machine_load": MachineRefSchema,
    # result {"machine": MachineStatus}
    "machine_update": MachineUpdateSchema,
    # result {"tags": {...}, "customer_metadata": {...}}
    "machine_update_metadata": MachineMetadataUpdateSchema,
    # results: create {"snapshot": SnapshotSchema}; list {"snapshots": [SnapshotSchema]};
    # rollback {"machine": MachineStatus}; delete {"deleted": name}
    "snapshot_create": SnapshotRefSchema,
    "snapshot_list": MachineRefSchema,
    "snapshot_rollback": SnapshotRefSchema,
    "snapshot_delete": SnapshotRefSchema,
    # result {"image": {"uuid", "size", "sha256", "compression"}}
    "image_create_from_machine": CreateImageSchema,
    # results {"machine": MachineStatus}
    "machine_add_nics": MachineNicsAddSchema,
    "machine_remove_nics": MachineNicsRemoveSchema,
    "machine_update_nics": MachineNicsUpdateSchema,
    # result {"overlay": {"version": ...}}
    "node_set_overlay_peers": OverlayPeersSchema,
    "report_status": EmptySchema,
    "sim_faults": SimFaultsSchema,
    # result {"outcomes": [TaskOutcome of each op that ran]}
    "batch": BatchSchema,
    # results in schemas/migrations.py's docstring
    **MIGRATION_TASKS,
}


class SnapshotSchema(Schema):
    name = fields.String(required=True)
    created_at = fields.Float(required=True)  # unix time
    size_mb = fields.Integer(load_default=0)


class MachineStatusSchema(Schema):
    """One machine as its node sees it. Results of machine_* tasks are ``{"machine": this}``
    (``machine_destroy`` returns state ``destroyed``)."""

    uuid = fields.String(required=True)
    alias = fields.String(load_default="")
    state = fields.String(required=True,
                          validate=validate.OneOf((*NODE_MACHINE_STATES, "destroyed")))
    image_uuid = fields.String(load_default="")
    ram_mb = fields.Integer(load_default=0)
    disk_mb = fields.Integer(load_default=0)
    disk_used_mb = fields.Integer(load_default=0)
    boot_time = fields.Float(load_default=None, allow_none=True)
    #: the NICs the node has for it: ``{"mac", "interface"}`` each, in interface order
    nics = fields.List(fields.Dict(), load_default=list)


class ServerStatusSchema(Schema):
    """The periodic status report (CNAPI's ``events/status``)."""

    server_uuid = fields.String(required=True)
    machines = fields.List(fields.Nested(MachineStatusSchema), required=True)
    images = fields.List(fields.String(), load_default=list)
    pool_size_mb = fields.Integer(required=True)
    pool_used_mb = fields.Integer(required=True)
    ram_mb = fields.Integer(required=True)
    ram_free_mb = fields.Integer(required=True)
    timestamp = fields.Float(required=True)
    #: the OverlayPeersSchema version the node applied last ("" = none yet)
    overlay_version = fields.String(load_default="")
    #: what the node made and no machine of its owns any more, as ``kind:name``
    #: (``veth:v90b8d0...``, ``nft:nic_...``, ``netns:<uuid>``); ``sdc doctor`` lists them
    leftovers = fields.List(fields.String(), load_default=list)
    #: False: ``machines`` lists only those that changed since the node's last report; an
    #: older agent's report, without it, lists them all
    full = fields.Boolean(load_default=True)


#: sysinfo key of what a node runs (our own, as "SDC Backend"): {"os": [...], "type": [...]}
SYSINFO_RUNS = "SDC Runs"


class RunsSchema(Schema):
    """The image OSes and image types (schemas.ops' names) a node runs; a list left out
    means any. An agent older than this report sends none, and the head node falls back to
    what the node's backend ran before (headnode/placement/runs.py)."""

    os = fields.List(fields.String(), load_default=None)
    type = fields.List(fields.String(), load_default=None)
    #: image file format (tar, zfs) -> the image types the node installs from it; left out:
    #: what the node's backend took before nodes reported it (runs.py)
    format = fields.Dict(keys=fields.String(validate=validate.OneOf(FILE_FORMATS)),
                         values=fields.List(fields.String()), load_default=None)


#: sysinfo key of the nic tags' uplinks (our own): {tag: {"link": ..., "underlay": ...}}
SYSINFO_NIC_TAGS = "SDC NIC Tags"


class SysinfoSchema(Schema):
    """Registration of a node. Keys on the wire are SmartOS ``sysinfo`` names."""

    uuid = fields.String(required=True, data_key="UUID")
    hostname = fields.String(required=True, data_key="Hostname")
    backend = fields.String(required=True, data_key="SDC Backend",
                            validate=validate.OneOf(["sim", "linux", "smartos"]))
    system_type = fields.String(load_default="Linux", data_key="System Type")
    cpus = fields.Integer(required=True, data_key="CPU Total Cores", validate=validate.Range(min=1))
    ram_mb = fields.Integer(required=True, data_key="MiB of Memory", validate=validate.Range(min=1))
    pool_size_mb = fields.Integer(required=True, data_key="Zpool Size in MiB",
                                  validate=validate.Range(min=0))
    boot_time = fields.Float(load_default=None, allow_none=True, data_key="Boot Time")
    nic_tags = fields.List(fields.String(), load_default=list, data_key="NIC Names")
    traits = fields.Dict(load_default=dict, data_key="Traits")
    kernel = fields.String(load_default="", data_key="Live Image")
    agent_version = fields.String(load_default="", data_key=SYSINFO_VERSION)
    runs = fields.Nested(RunsSchema, load_default=None, data_key=SYSINFO_RUNS)
    nic_tag_uplinks = fields.Dict(keys=fields.String(), values=fields.Nested(NicTagUplinkSchema),
                                  load_default=dict, data_key=SYSINFO_NIC_TAGS)
