"""Bringing a compute node in over SSH (``server_setup``) and moving its agent to another
version (``agent_upgrade``, a rollback too): jobs of local steps that run on the head node
and reach the node with one SSH connection each (headnode/nodesetup does the node's part).

Every step that talks to the node has its own turn (``Step.own_turn``): the steps before it
are committed, so `sdc job get --watch` shows each one finish, and minutes of SSH never hold
the job's lock. Each is idempotent (a second setup of a set-up node changes nothing and
restarts nothing), and the onerror chain puts the node back as ``inspect`` found it.

No step records a secret: the node's credentials and the Redis URL it is given are made in
the ``configure`` step and go to the node only.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from headnode.nodesetup import bundle, install, node, nodeconfig
from headnode.nodesetup.errors import NodeSetupError
from headnode.nodesetup.layout import NodeLayout
from headnode.services.revocation import is_revoked
from headnode.ssh.client import Access, Connection, Target, connect
from headnode.ssh.errors import SshError
from headnode.ssh.keys import head_key
from headnode.ssh.known_hosts import KnownHosts
from headnode.store.models import Server
from schemas.agent import HEARTBEAT_KEY, SYSINFO_VERSION
from sdccommon import signing
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.params import NodeSetupParams

#: how long a node's agent may take to register and heartbeat after it started
HEARTBEAT_WAIT = 120.0
POLL = 1.0
#: what the steps making a release record in a rollback, which uses the release the node has
ROLLBACK_SKIPS = {"skipped": "a rollback uses the release the node has", "changed": False}

StepFn = Callable[[StepContext], dict[str, Any] | None]


def node_step(fn: StepFn) -> StepFn:
    """A step's node errors as the job records them: their code and message, no traceback."""
    @wraps(fn)
    def run(ctx: StepContext) -> dict[str, Any] | None:
        try:
            return fn(ctx)
        except NodeSetupError as exc:
            raise StepFailed(exc.code, exc.message) from exc
        except SshError as exc:
            raise StepFailed(type(exc).__name__, str(exc)) from exc
    return run


def params_of(ctx: StepContext) -> NodeSetupParams:
    return NodeSetupParams.of(ctx.job)


def layout_of(ctx: StepContext) -> NodeLayout:
    return NodeLayout(params_of(ctx).prefix)


def result_of(ctx: StepContext, name: str) -> dict[str, Any] | None:
    """What the chain's step ``name`` recorded when it last succeeded."""
    for entry in reversed(ctx.job.chain_results or []):
        if entry.get("name") == name and not entry.get("error"):
            result = entry.get("result")
            return result if isinstance(result, dict) else None
    return None


def inspected(ctx: StepContext) -> dict[str, Any]:
    found = result_of(ctx, "inspect")
    if found is None:
        raise StepFailed("NotInspected", "the node was not inspected")
    return found


def open_node(ctx: StepContext, accept_new: bool = False) -> Connection:
    """Log in to the job's node with the head node's key; its host key must be known, or
    (first contact, when the operator asked) is recorded now."""
    params, data_dir = params_of(ctx), ctx.settings.data_dir
    access = Access(head_key(data_dir), KnownHosts.of(data_dir), accept_new)
    return connect(Target(params.host, params.port, params.user), access,
                   ctx.settings.node_connect_timeout)


def job_bundle(ctx: StepContext) -> bundle.AgentBundle:
    """The very bundle prepare_bundle made (its directory is named by its sdc wheel's
    digest and never changes once complete): a checkout built again meanwhile, with the
    same version, is not picked up halfway through a job."""
    made = result_of(ctx, "prepare_bundle") or {}
    if not made.get("version") or not made.get("directory"):
        raise StepFailed("NoBundle", "no agent bundle was prepared")
    directory = Path(made["directory"])
    complete = directory / bundle.COMPLETE
    if not complete.exists():
        raise StepFailed("BundleGone", f"the agent bundle {directory} this job prepared is "
                         "gone from the head node: run the job again")
    return bundle.AgentBundle(str(made["version"]), directory, complete.read_text().split(),
                              bundle.head_python())


# -- the steps ---------------------------------------------------------------------------------

@node_step
def prepare_bundle(ctx: StepContext) -> dict[str, Any]:
    if params_of(ctx).rollback:
        return dict(ROLLBACK_SKIPS)
    return bundle.prepare(ctx.settings, params_of(ctx).version).to_dict()


@node_step
def inspect_node(ctx: StepContext) -> dict[str, Any]:
    """What the node has (``before``, for restore), whether it can take the agent, which
    server it is, and the version this job puts on it."""
    params = params_of(ctx)
    with open_node(ctx, accept_new=params.accept_new_host_key) as conn:
        state = node.inspect(conn, layout_of(ctx), params.backend, params.pool)
    version = target_version(ctx, state)
    node.check(state, params.backend, None if params.rollback else job_bundle(ctx))
    server_uuid = choose_uuid(ctx, state)
    return {"server_uuid": server_uuid, "version": version, "before": state.to_dict(),
            "new_server": state.server_uuid is None}


def target_version(ctx: StepContext, state: node.NodeState) -> str:
    params = params_of(ctx)
    if not params.rollback:
        return str((result_of(ctx, "prepare_bundle") or {}).get("version"))
    if not state.previous_version:
        raise StepFailed("NoPreviousRelease", f"{params.host}: the node has no previous "
                         "agent release to go back to")
    return state.previous_version


def choose_uuid(ctx: StepContext, state: node.NodeState) -> str:
    """The node's own uuid (its agent.env), else a new one; never a forgotten one."""
    params = params_of(ctx)
    chosen = state.server_uuid or params.server_uuid or str(uuidlib.uuid4())
    if params.server_uuid and chosen != params.server_uuid:
        raise StepFailed("NodeMismatch", f"{params.host}:{params.port} is server {chosen}, "
                         f"not {params.server_uuid}: was another node installed there?")
    if is_revoked(ctx.session, chosen):
        raise StepFailed("ServerRevoked", f"the node's uuid {chosen} was forgotten (`sdc "
                         "server forget`) and its credentials revoked: remove "
                         f"{layout_of(ctx).env_file} on the node to set it up anew (it then "
                         "gets a new uuid)")
    return chosen


def release_step(put: Callable[[Connection, NodeLayout, bundle.AgentBundle],
                               dict[str, Any]]) -> StepFn:
    """A step putting the job's bundle on the node (``put``), skipped in a rollback."""
    @node_step
    def run(ctx: StepContext) -> dict[str, Any]:
        if params_of(ctx).rollback:
            return dict(ROLLBACK_SKIPS)
        with open_node(ctx) as conn:
            return put(conn, layout_of(ctx), job_bundle(ctx))
    return run


upload = release_step(install.upload)
install_release = release_step(install.install)


@node_step
def configure(ctx: StepContext) -> dict[str, Any]:
    """agent.env, credentials.json and the CA: made here, in the worker, and recorded
    nowhere (the job shows only whether they changed)."""
    params, layout = params_of(ctx), layout_of(ctx)
    config = nodeconfig.node_config(ctx.settings, inspected(ctx)["server_uuid"], layout,
                                    params.backend, pool=params.pool,
                                    nic_tags=params.nic_tags, hostname=params.hostname)
    with open_node(ctx) as conn:
        return install.write_config(conn, layout, config)


@node_step
def activate(ctx: StepContext) -> dict[str, Any]:
    with open_node(ctx) as conn:
        return install.activate(conn, layout_of(ctx), inspected(ctx)["version"])


@node_step
def restore(ctx: StepContext) -> dict[str, Any]:
    """Put the node back as inspect found it (a node that had nothing is left with
    nothing); nothing to do if the node was never inspected."""
    found = result_of(ctx, "inspect")
    if found is None:
        return {"changed": False, "reason": "the job stopped before it changed the node"}
    with open_node(ctx) as conn:
        return install.restore(conn, layout_of(ctx), node.NodeState.from_dict(found["before"]))


def wait_heartbeat(ctx: StepContext) -> dict[str, Any]:
    """The node's agent registered and heartbeats."""
    return wait_for_agent(ctx, inspected(ctx)["server_uuid"], version=None)


def wait_version(ctx: StepContext) -> dict[str, Any]:
    """The agent heartbeats with the new version in its sysinfo (it registers again when it
    starts)."""
    found = inspected(ctx)
    return wait_for_agent(ctx, found["server_uuid"], version=found["version"])


def wait_for_agent(ctx: StepContext, server_uuid: str, version: str | None) -> dict[str, Any]:
    deadline = time.monotonic() + HEARTBEAT_WAIT
    seen: dict[str, Any] = {}
    with redis.Redis.from_url(ctx.settings.redis_url, socket_timeout=5) as client:
        while True:
            seen = agent_seen(ctx, client, server_uuid)
            if seen["registered"] and seen["heartbeat_age"] is not None \
                    and seen["heartbeat_age"] <= ctx.settings.heartbeat_lifetime \
                    and (version is None or seen["agent_version"] == version):
                return seen
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
    which = f"agent {version}" if version else "agent"
    raise StepFailed("NoHeartbeat", f"server {server_uuid}: no {which} heard from within "
                     f"{HEARTBEAT_WAIT:g} s ({describe_seen(seen)}); see "
                     f"{layout_of(ctx).log_file} on the node")


def agent_seen(ctx: StepContext, client: redis.Redis, server_uuid: str) -> dict[str, Any]:
    row = ctx.session.execute(select(Server.sysinfo).where(Server.uuid == server_uuid)).first()
    # each look is a transaction of its own: a long wait holds nothing in the database
    ctx.session.rollback()
    raw = client.hget(HEARTBEAT_KEY, server_uuid)
    # a heartbeat counts only if the node's key signed it (as the reconciler reads them)
    beat = signing.beat_time(server_uuid, _text(raw)) if raw is not None else None
    age = round(time.time() - beat, 1) if beat is not None else None
    return {"server_uuid": server_uuid, "registered": row is not None,
            "heartbeat_age": age,
            "agent_version": (row[0] or {}).get(SYSINFO_VERSION) if row is not None else None}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def describe_seen(seen: dict[str, Any]) -> str:
    if not seen.get("registered"):
        return "it has not registered"
    if seen.get("heartbeat_age") is None:
        return "registered, no heartbeat"
    return (f"last heartbeat {seen['heartbeat_age']} s ago, agent "
            f"{seen.get('agent_version') or 'of unknown version'}")


def mark_setup(ctx: StepContext) -> dict[str, Any]:
    """The server receives machines, and is reached at this address from now on."""
    params, server_uuid = params_of(ctx), inspected(ctx)["server_uuid"]
    server = ctx.session.get(Server, server_uuid, with_for_update={"key_share": True})
    if server is None:
        raise StepFailed("ServerGone", f"server {server_uuid} was forgotten meanwhile")
    wanted = {"setup": True, "ssh_host": params.host, "ssh_port": params.port,
              "ssh_user": params.user,
              "agent_prefix": None if params.prefix == "/" else params.prefix}
    changed = sorted(k for k, v in wanted.items() if getattr(server, k) != v)
    for key in changed:
        setattr(server, key, wanted[key])
    ctx.job.server_uuid = server_uuid
    return {"server_uuid": server_uuid, "changed": bool(changed), "fields": changed}


# -- the workflows -----------------------------------------------------------------------------

def node_steps(*steps: tuple[str, float, StepFn]) -> tuple[Step, ...]:
    return tuple(Step(name, timeout, run=fn, own_turn=True) for name, timeout, fn in steps)


# Generous, and above the limits of the commands a step runs (headnode/nodesetup: a build
# 300 s + pip 600 s, a venv 180 s + pip 600 s, a stop 90 s): the sweep fails a step past its
# deadline and runs restore, which must not race a step still at work on the node.
PREPARE = ("prepare_bundle", 1200.0, prepare_bundle)
INSPECT = ("inspect", 180.0, inspect_node)
UPLOAD = ("upload", 1200.0, upload)
INSTALL = ("install", 1200.0, install_release)
ACTIVATE = ("activate", 300.0, activate)
RESTORE = node_steps(("restore", 600.0, restore))

SERVER_SETUP = register(Workflow(
    name="server_setup",
    chain=(*node_steps(PREPARE, INSPECT, UPLOAD, INSTALL, ("configure", 120.0, configure),
                       ACTIVATE, ("wait_heartbeat", HEARTBEAT_WAIT + 60, wait_heartbeat)),
           # a short write: in the turn that recorded the heartbeat
           Step("mark_setup", 60.0, run=mark_setup)),
    onerror=RESTORE,
    timeout=7200.0,
))

AGENT_UPGRADE = register(Workflow(
    name="agent_upgrade",
    chain=node_steps(PREPARE, INSPECT, UPLOAD, INSTALL, ACTIVATE,
                     ("wait_version", HEARTBEAT_WAIT + 60, wait_version)),
    onerror=RESTORE,
    timeout=7200.0,
))
