"""Setting nodes up over SSH and moving their agents to another version, as jobs
(workflows/node_setup.py runs them); the agent wheels they install.

The service checks what it can before a job starts (the server, its SSH address, the
version asked for, no other such job on that node) and records only what is not secret:
the node's credentials and Redis URL are made in the worker by the step that writes them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from headnode.nodesetup import bundle, wheels
from headnode.nodesetup.errors import NodeSetupError
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.revocation import is_revoked
from headnode.store.models import Job, Server
from workflows.engine import ACTIVE, new_job
from workflows.params import NodeSetupParams

SETUP = "server_setup"
UPGRADE = "agent_upgrade"
NODE_JOBS = (SETUP, UPGRADE)


def start_setup(ctx: ServiceContext, request: dict[str, Any],
                caller: dict[str, Any]) -> dict[str, Any]:
    """Start a ``server_setup`` job for the node at ``request``'s host (ServerSetupRequest,
    validated); 404 for a version no bundle has, 409 while another job works on that node."""
    params = NodeSetupParams(**request)
    check_version(ctx, params.version)
    return _start(ctx, SETUP, params, caller)


def start_upgrade(ctx: ServiceContext, server_uuid: str, version: str | None,
                  rollback: bool, caller: dict[str, Any]) -> dict[str, Any]:
    """Start an ``agent_upgrade`` job on a set-up server (or its rollback to the release it
    ran before); 404 for an unknown server or version, 409 for a forgotten one, one without
    an SSH address, or one another node job works on."""
    with ctx.read() as session:
        if is_revoked(session, server_uuid):
            raise Conflict(f"server {server_uuid} was forgotten and its credentials revoked",
                           code="ServerRevoked")
        server = session.get(Server, server_uuid)
    if server is None:
        raise NotFound("server", server_uuid)
    if not server.ssh_host:
        raise Conflict(f"server {server_uuid} has no SSH address: `sdc server update "
                       f"{server_uuid} --ssh-host HOST` first", code="NoSshAddress")
    if not rollback:
        check_version(ctx, version)
    params = NodeSetupParams(host=server.ssh_host, port=server.ssh_port, user=server.ssh_user,
                             prefix=server.agent_prefix or "/", backend=server.backend,
                             version=version, server_uuid=server_uuid, rollback=rollback)
    return _start(ctx, UPGRADE, params, caller)


def check_version(ctx: ServiceContext, version: str | None) -> None:
    """A version must be one the head node can send (None: built from its checkout)."""
    if version is not None and version not in bundle.stored_versions(ctx.settings):
        raise NotFound("agent bundle", version)


def _start(ctx: ServiceContext, workflow: str, params: NodeSetupParams,
           caller: dict[str, Any]) -> dict[str, Any]:
    with ctx.transaction() as session:
        _one_job_per_node(session, params)
        _leave_a_worker_free(ctx, session)
        job = new_job(session, workflow, machine_uuid=None, server_uuid=params.server_uuid,
                      owner_uuid=None, params=params.to_json(), caller=caller)
        session.flush()
        job_uuid = job.uuid
    if ctx.jobs is not None:
        ctx.jobs.enqueue(job_uuid)
    return {"job_uuid": job_uuid, "host": params.host, "port": params.port,
            "prefix": params.prefix, "server_uuid": params.server_uuid,
            "version": params.version, "rollback": params.rollback}


def node_key(params: NodeSetupParams | dict[str, Any]) -> tuple[str, int, str]:
    """What names one node: where it is reached, and where on it the agent goes."""
    if isinstance(params, NodeSetupParams):
        return params.host.lower(), params.port, params.prefix
    return (str(params.get("host", "")).lower(), int(params.get("port", 22)),
            str(params.get("prefix", "/")))


def _one_job_per_node(session: Session, params: NodeSetupParams) -> None:
    """Two jobs installing on one node at once would undo each other's work: 409 while
    one runs. A transaction-scoped lock on the node's name makes two requests at once see
    each other (PostgreSQL; SQLite runs one write transaction at a time anyway)."""
    key = node_key(params)
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(repr(key).encode()).digest()
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                        {"k": int.from_bytes(digest[:8], "big", signed=True)})
    for job_uuid, name, job_params in _active_node_jobs(session):
        if node_key(job_params or {}) == key:
            raise Conflict(f"job {job_uuid} ({name}) is working on {key[0]}:{key[1]} "
                           f"(prefix {key[2]}): wait for it (`sdc job get {job_uuid} "
                           "--watch`)", code="NodeBusy", job_uuid=job_uuid)


def node_job_limit(ctx: ServiceContext) -> int:
    """How many node jobs may run at once. Each holds a worker thread for as long as its
    SSH step takes (minutes), and the node's registration, which a setup or an upgrade
    waits for, is taken by another thread of the same worker: one must stay free."""
    return max(1, ctx.settings.worker_concurrency - 1)


def _leave_a_worker_free(ctx: ServiceContext, session: Session) -> None:
    running = len(_active_node_jobs(session))
    limit = node_job_limit(ctx)
    if running >= limit:
        raise Conflict(f"{running} node setup or upgrade job(s) run already, as many as the "
                       f"workflow worker can hold while it still takes the nodes' messages "
                       f"(SDC_WORKER_CONCURRENCY - 1 = {limit}): wait for one to end",
                       code="TooManyNodeJobs", limit=limit)


def _active_node_jobs(session: Session) -> list[tuple[str, str, dict[str, Any]]]:
    rows = session.execute(select(Job.uuid, Job.name, Job.params).where(
        Job.name.in_(NODE_JOBS), Job.execution.in_(ACTIVE)))
    return [(uuid, name, params) for uuid, name, params in rows]


# -- agent wheels ------------------------------------------------------------------------------

def store_agent_wheel(ctx: ServiceContext, filename: str, data: bytes) -> dict[str, Any]:
    """Keep an uploaded ``sdc`` wheel; 422 naming what is wrong with it, 409 if another
    wheel of that version is stored."""
    if wheels.version_of(filename) is None:
        raise InvalidArgument("filename", f"{filename[:64]!r} is not the name of an sdc wheel "
                              "(sdc-VERSION-py3-none-any.whl)")
    try:
        version = bundle.store_wheel(ctx.settings, filename, data)
    except NodeSetupError as exc:
        if exc.code == "VersionExists":
            raise Conflict(exc.message, code=exc.code) from exc
        raise InvalidArgument("body", exc.message) from exc
    return {"version": version, "filename": filename}


def list_agent_bundles(ctx: ServiceContext) -> list[dict[str, Any]]:
    return [{"version": v, "filename": None} for v in bundle.stored_versions(ctx.settings)]
