"""Machines: create (allocate, then one transaction for machine, reservation and job), act
on them (start, stop, reboot, destroy: one job per machine at a time), list and get."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Executable,
    String,
    bindparam,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, load_only

from headnode.placement.allocator import (
    NOT_ENOUGH_DISK,
    NOT_ENOUGH_RAM,
    PlacementRequest,
    Snapshot,
)
from headnode.services import (
    admission,
    authorized_keys,
    capacity,
    fleet_cache,
    placement,
    retry,
)
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InsufficientCapacity, InvalidArgument, NotFound
from headnode.services.networks import (
    attach_nics,
    default_network_uuid,
    machine_network_fields,
    requested_networks,
)
from headnode.services.placement import pipeline_for, policy_for
from headnode.services.resolve import (
    image_query,
    is_uuid,
    owner_query,
    package_query,
    resolve_package,
    usable_image,
    usable_owner,
    usable_package,
)
from headnode.services.statements import per_thread_cache
from headnode.store.models import (
    ALIAS_HOLDING_STATES,
    Account,
    Image,
    Machine,
    Migration,
    Network,
    Package,
    Server,
    new_uuid,
)
from schemas.ops import ALIAS_PATTERN
from workflows.engine import new_job
from workflows.params import ProvisionParams, RenameParams, ResizeParams

ACTIONS = ("start", "stop", "reboot")
#: states from which each action may start
ACTION_FROM = {"start": ("stopped", "running"), "stop": ("running", "stopped"),
               "reboot": ("running",)}
#: a create reads the fleet at most this often; each read's decision is tried on its winner
#: and its next best (pipeline.NEXT_BEST) before the next read
PLACEMENT_ATTEMPTS = 5
#: states in which a machine's definition (size, name, snapshots) may change
CHANGEABLE = ("running", "stopped")
#: the workflows of a migration's phases (services.migrations), which its guard lets by
MIGRATION_WORKFLOW_PREFIX = "migrate_"
ALIAS_INDEX = "uq_machines_owner_alias_live"
#: a machine's brand (vmadm's) from its image's type; a Docker image runs as an lx zone
BRANDS = {"lx-dataset": "lx", "zone-dataset": "joyent", "zvol": "kvm", "docker": "lx"}
DEFAULT_BRAND = "joyent"
#: brands an image may ask for by name (IMGAPI's ``requirements.brand``)
KNOWN_BRANDS = frozenset({"joyent", "joyent-minimal", "lx", "kvm", "bhyve"})

#: work a job-starting request does inside its transaction once it holds the machine's lock;
#: returns the job's params
Prepare = Callable[[Session, Machine, str], dict[str, Any] | None]


def brand_for(image: Image) -> str:
    """The image's ``requirements.brand`` if it names one, else its type's brand."""
    asked = (image.requirements or {}).get("brand")
    return asked if asked in KNOWN_BRANDS else BRANDS.get(image.type, DEFAULT_BRAND)


def machine_to_dict(m: Machine) -> dict[str, Any]:
    return {
        "uuid": m.uuid, "alias": m.alias, "owner_uuid": m.owner_uuid,
        "package_uuid": m.package_uuid, "image_uuid": m.image_uuid,
        "server_uuid": m.server_uuid, "state": m.state, "ram_mb": m.ram_mb,
        "disk_mb": m.disk_mb, "cpu_cap": m.cpu_cap, "vcpus": m.vcpus, "brand": m.brand,
        "tags": m.tags, "metadata": m.customer_metadata, "job_uuid": m.job_uuid,
        "created_at": m.created_at, "updated_at": m.updated_at,
        **machine_network_fields(m),
    }


@dataclass(frozen=True)
class _Lookup:
    """What a create names, read in one statement: each row or None, whether the alias
    (the one asked for or the one made up) is taken and the named server exists, and the
    owner's default network (read only when the create names no network)."""

    owner: Account | None
    package: Package | None
    image: Image | None
    alias_taken: bool
    server_exists: bool
    default_network: Network | None = None


def _lookup(session: Session, body: dict[str, Any], made_alias_suffix: str) -> _Lookup:
    """The owner, package and image of a create and the checks on its alias and server in
    one round trip."""
    owner, package, image = body["owner"], body["package"], body["image"]
    alias, only = body.get("alias"), body.get("server_uuid")
    query = _lookup_query(is_uuid(owner), is_uuid(package), is_uuid(image), bool(alias),
                          bool(only), not body.get("networks"))
    row = session.execute(query, {
        "b_owner": owner, "b_package": package, "b_image": image,
        "b_alias": alias or made_alias_suffix, "b_server": only}).one()
    return _Lookup(*row)


@per_thread_cache
def _lookup_query(owner_by_uuid: bool, package_by_uuid: bool, image_by_uuid: bool,
                  alias_given: bool, pinned: bool, default_network: bool) -> Executable:
    """Built once per shape of request (building it on every create cost as much as
    running it). Each of owner, package and image is a subquery of at most one row,
    outer-joined to a single row; a made-up alias is the package's name and
    ``b_alias``. The default network's uuid is a column of the owner's subquery (SQLite
    cannot correlate a join's condition with an earlier join), then joined to its row."""
    owners = owner_query(bindparam("b_owner"), owner_by_uuid)
    if default_network:
        owners = owners.add_columns(default_network_uuid(Account).label("network"))
    owner_row = owners.subquery("owner")
    owner = aliased(Account, owner_row)
    package = aliased(Package, package_query(bindparam("b_package"), package_by_uuid)
                      .subquery("package"))
    image = aliased(Image, image_query(bindparam("b_image"), image_by_uuid)
                    .subquery("image"))
    given = bindparam("b_alias", type_=String)
    alias = given if alias_given else package.name + given
    alias_taken = exists().where(Machine.owner_uuid == owner.uuid, Machine.alias == alias,
                                 Machine.state.in_(ALIAS_HOLDING_STATES))
    server_exists = (exists().where(Server.uuid == bindparam("b_server")) if pinned
                     else literal(True))
    one = select(literal(1).label("one")).subquery("one")
    query = (select(owner, package, image, alias_taken, server_exists).select_from(one)
             .outerjoin(owner, true()).outerjoin(package, true()).outerjoin(image, true())
             # Only what a create uses (fewer columns to describe and load); anything else
             # raises rather than quietly costing a query of its own.
             .options(load_only(owner.uuid, raiseload=True),
                      load_only(package.uuid, package.name, package.memory, package.disk,
                                package.vcpus, package.cpu_cap, package.max_lwps,
                                package.active, package.traits, raiseload=True),
                      load_only(image.uuid, image.name, image.state, image.os, image.type,
                                image.size_mb, image.traits, image.requirements,
                                image.files,  # its format, for placement
                                raiseload=True)))
    if not default_network:
        return query
    network = aliased(Network, name="default_network")
    return (query.add_columns(network)
            .outerjoin(network, network.uuid == owner_row.c.network)
            .options(load_only(network.uuid, network.name, network.subnet, network.gateway,
                               network.provision_start_ip, network.provision_end_ip,
                               network.nic_tag, raiseload=True)))


def _usable(found: _Lookup, body: dict[str, Any]) -> tuple[Account, Package, Image]:
    """The lookup's refusals, in the order the single-purpose resolvers give them."""
    return (usable_owner(found.owner, body["owner"]),
            usable_package(found.package, body["package"]),
            usable_image(found.image, body["image"]))


def _fleet(session: Session, request: PlacementRequest, only: str | None,
           fresh: bool) -> Snapshot:
    """This process's fleet snapshot (fleet_cache); ``fresh`` when a decision on it would
    refuse the create, or the guard refused every candidate: then it must see the fleet as
    it is, not as the cache last read it."""
    return fleet_cache.load_snapshot(session, request.owner_uuid, only,
                                     with_machines=bool(request.affinity),
                                     image_uuid=request.image_uuid, fresh=fresh)


def _check_alias_free(session: Session, owner_uuid: str, alias: str) -> None:
    taken = session.scalar(
        select(func.count()).select_from(Machine).where(
            Machine.owner_uuid == owner_uuid, Machine.alias == alias,
            Machine.state.in_(ALIAS_HOLDING_STATES))
    )
    if taken:
        raise Conflict(f"a machine named {alias!r} already exists", code="DuplicateName")


def _place(session: Session, ctx: ServiceContext, request: PlacementRequest,
           machine_uuid: str, job_uuid: str, only: str | None) -> str:
    """Pick a server and hold room on it; refuse with every reason when none fits."""
    policy, pipeline = policy_for(ctx), pipeline_for(ctx)
    attempt = request
    lost: set[str] = set()
    # what a direct read (SQLite, a named server) gives is fresh already
    fresh = not fleet_cache.serves(session, only)
    for _ in range(PLACEMENT_ATTEMPTS):
        decision = pipeline.decide(_fleet(session, request, only, fresh), attempt, policy)
        if decision.server is None:
            if not fresh:  # a refusal names the fleet as it is, not as the cache last saw it
                fresh = True
                continue
            raise InsufficientCapacity(decision.explain(attempt), decision.reasons)
        fresh = True  # if every candidate is lost, the next decision needs what refused them
        # The winner, then the decision's next best (at most NEXT_BEST): another provision
        # that took the winner's room most likely left the next one free, and trying it
        # costs one guarded UPDATE where reading the fleet again costs a SELECT as well.
        for candidate in decision.candidates:
            chosen = candidate.uuid
            if capacity.reserve(session, chosen, machine_uuid, job_uuid, request.ram_mb,
                                request.disk_mb, request.cpu_cap, policy,
                                request.image_uuid or None, request.image_mb):
                return chosen
            # Another provision won the room. The guard waited for it to commit, so when
            # every candidate is lost a fresh snapshot shows why (and a refusal names the
            # real reason); a server lost twice is left out, so the retries always make
            # progress.
            if chosen in lost:
                attempt = attempt.excluding(chosen)
            lost.add(chosen)
    raise InsufficientCapacity("no server could be reserved: the fleet is changing too fast, "
                               "try again", {"lost races": PLACEMENT_ATTEMPTS})


def create_machine(ctx: ServiceContext, body: dict[str, Any], caller: dict[str, Any],
                   require_keys: bool = False) -> dict[str, Any]:
    """``require_keys`` (CloudAPI): an owner without SSH keys cannot have a machine of an
    image that is logged in to with keys only (authorized_keys.with_owner_keys)."""
    admission.admit_provision(ctx)  # before any work: refusing is the point when busy
    try:
        # The whole transaction again if the database aborts it to break a lock cycle: the
        # client must never see a deadlock.
        machine, job_uuid = retry.in_transaction(
            lambda: _create_records(ctx, body, caller, require_keys), "create machine")
    except IntegrityError as exc:
        # Two creates with one name raced past the check; the unique index stopped the second.
        if ALIAS_INDEX in str(exc.orig):
            raise Conflict(f"a machine named {body.get('alias')!r} already exists",
                           code="DuplicateName") from exc
        raise
    _enqueue(ctx, job_uuid)
    return machine_to_dict(machine)


def _create_records(ctx: ServiceContext, body: dict[str, Any], caller: dict[str, Any],
                    require_keys: bool) -> tuple[Machine, str]:
    """Allocate and write machine, reservation and job in one transaction."""
    machine_uuid, job_uuid = new_uuid(), new_uuid()
    made_alias_suffix = f"-{machine_uuid[:8]}"
    with ctx.transaction() as session:
        found = _lookup(session, body, made_alias_suffix)
        owner, package, image = _usable(found, body)
        alias = body.get("alias") or package.name + made_alias_suffix
        if found.alias_taken:
            raise Conflict(f"a machine named {alias!r} already exists", code="DuplicateName")
        only = body.get("server_uuid")
        if not found.server_exists:
            raise InvalidArgument("server_uuid", f"no server {only}")
        metadata = authorized_keys.with_owner_keys(session, owner.uuid, image.requirements,
                                                   dict(body.get("metadata") or {}),
                                                   require_keys)
        # The networks before the server: placement needs their nic tags.
        requested = body.get("networks")
        networks = (requested_networks(session, owner.uuid, requested) if requested
                    else [found.default_network] if found.default_network else [])
        request = placement.build_request(package, image, owner.uuid, body.get("affinity"),
                                          placement.nic_tags_of(networks))
        server_uuid = _place(session, ctx, request, machine_uuid, job_uuid, only)
        machine = Machine(
            uuid=machine_uuid, alias=alias, owner_uuid=owner.uuid, package_uuid=package.uuid,
            image_uuid=image.uuid, server_uuid=server_uuid, state="provisioning",
            ram_mb=package.memory, disk_mb=package.disk, cpu_cap=package.cpu_cap,
            vcpus=package.vcpus, max_lwps=package.max_lwps,
            brand=brand_for(image),
            tags=dict(body.get("tags") or {}), customer_metadata=metadata, job_uuid=job_uuid,
            affinity=list(body.get("affinity") or []),
        )
        session.add(machine)
        attach_nics(session, machine, networks)
        new_job(session, "provision", resend_after=ctx.settings.resend_interval,
                machine_uuid=machine_uuid, server_uuid=server_uuid,
                owner_uuid=owner.uuid, caller=caller, job_uuid=job_uuid,
                params=ProvisionParams(package=package.name, image=image.uuid).to_json())
    return machine, job_uuid


def _enqueue(ctx: ServiceContext, job_uuid: str) -> None:
    if ctx.jobs is not None:
        ctx.jobs.enqueue(job_uuid)


def _lock_for_job(session: Session, machine: Machine, job_uuid: str) -> None:
    taken = session.execute(
        update(Machine).where(Machine.uuid == machine.uuid, Machine.job_uuid.is_(None))
        .values(job_uuid=job_uuid).execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"machine {machine.uuid} is busy with another job",
                       code="MachineBusy")


#: what a switched machine (running on its target, its source copy kept until the migration
#: is finalized or rolled back) may still do: a tenant must be able to stop and start it
SWITCHED_MAY = ("start", "stop", "reboot")


def _migration_blocks(session: Session, machine_uuid: str, workflow: str) -> bool:
    """The machine has an unfinished migration (services.migrations) that ``workflow``
    would disturb."""
    states = session.scalars(select(Migration.state).where(
        Migration.machine_uuid == machine_uuid, Migration.finished_at.is_(None))).all()
    if not states:
        return False
    return not (workflow in SWITCHED_MAY and all(s == "successful" for s in states))


def load_machine(session: Session, machine_uuid: str) -> Machine:
    machine = session.get(Machine, machine_uuid) if is_uuid(machine_uuid) else None
    if machine is None or machine.state == "destroyed":
        raise NotFound("machine", machine_uuid)
    return machine


def start_machine_job(ctx: ServiceContext, machine_uuid: str, workflow: str,
                      allowed: tuple[str, ...], caller: dict[str, Any],
                      prepare: Prepare | None = None) -> dict[str, Any]:
    """Take the machine's lock and write its job in one transaction; enqueue after the
    commit. Every change to one machine starts here (one job per machine at a time)."""
    job_uuid = new_uuid()

    def write() -> None:
        with ctx.transaction() as session:
            machine = load_machine(session, machine_uuid)
            if machine.job_uuid is not None:
                raise Conflict(f"machine {machine.uuid} is busy with job {machine.job_uuid}",
                               code="MachineBusy")
            if not workflow.startswith(MIGRATION_WORKFLOW_PREFIX) \
                    and _migration_blocks(session, machine.uuid, workflow):
                raise Conflict(f"machine {machine.uuid} is being migrated: until its "
                               "migration is finalized, rolled back or aborted, only the "
                               "migration's own actions (and, once switched, start, stop "
                               "and reboot) may change it", code="MachineMigrating")
            if machine.state not in allowed:
                raise Conflict(f"cannot {workflow} a machine that is {machine.state}",
                               code="InvalidState")
            _lock_for_job(session, machine, job_uuid)
            params = prepare(session, machine, job_uuid) if prepare else None
            new_job(session, workflow, resend_after=ctx.settings.resend_interval,
                    machine_uuid=machine.uuid, server_uuid=machine.server_uuid,
                    owner_uuid=machine.owner_uuid, caller=caller, job_uuid=job_uuid,
                    params=params)

    retry.in_transaction(write, f"{workflow} machine")
    _enqueue(ctx, job_uuid)
    return {"machine_uuid": machine_uuid, "job_uuid": job_uuid}


def machine_action(ctx: ServiceContext, machine_uuid: str, action: str,
                   caller: dict[str, Any]) -> dict[str, Any]:
    if action not in ACTIONS:
        raise InvalidArgument("action", f"must be one of {', '.join(ACTIONS)}")
    return start_machine_job(ctx, machine_uuid, action, ACTION_FROM[action], caller)


def resize_machine(ctx: ServiceContext, machine_uuid: str, package: str,
                   caller: dict[str, Any]) -> dict[str, Any]:
    """Give a machine another package's size. Growth must fit on the machine's own server
    and is held there at once (atomically, as a provision's room is); shrinking frees room
    when the job has done it."""

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        new = resolve_package(session, package)
        if (new.cpu_cap > 0) != (machine.cpu_cap > 0):
            # Capped and uncapped machines never share a server (placement keeps them
            # apart, and the server counts each kind), so the kind cannot change in place.
            kind = {True: "capped", False: "uncapped"}
            raise InvalidArgument("package", f"the machine's CPU is {kind[machine.cpu_cap > 0]}"
                                  f", package {new.name}'s is {kind[new.cpu_cap > 0]}: a "
                                  "machine cannot change between the two")
        delta = {"ram_mb": new.memory - machine.ram_mb, "disk_mb": new.disk - machine.disk_mb,
                 "cpu": new.cpu_cap - machine.cpu_cap}
        held = {k: max(0, v) for k, v in delta.items()}
        if not capacity.reserve_growth(session, machine.server_uuid or "", held["ram_mb"],
                                       held["disk_mb"], held["cpu"], policy_for(ctx)):
            reason = NOT_ENOUGH_RAM if delta["ram_mb"] > 0 else NOT_ENOUGH_DISK
            raise InsufficientCapacity(
                f"server {machine.server_uuid} has no room to grow machine {machine.uuid} "
                f"to package {new.name}", {reason: 1})
        return ResizeParams(package=new.uuid, package_name=new.name, ram_mb=new.memory,
                            disk_mb=new.disk, cpu_cap=new.cpu_cap, vcpus=new.vcpus,
                            max_lwps=new.max_lwps, delta=delta, held=held).to_json()

    return start_machine_job(ctx, machine_uuid, "resize", CHANGEABLE, caller, prepare)


def rename_machine(ctx: ServiceContext, machine_uuid: str, alias: str,
                   caller: dict[str, Any]) -> dict[str, Any]:
    """Rename a machine. The new name is taken at once (so no other machine of the owner can
    take it meanwhile); the job renames it on its node and gives the old name back if that
    fails."""
    if not isinstance(alias, str) or not re.fullmatch(ALIAS_PATTERN, alias):
        raise InvalidArgument("alias", "must start with a letter or digit, then up to 188 "
                                       "of [a-zA-Z0-9_.-]")

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        old = machine.alias
        if alias != old:
            _check_alias_free(session, machine.owner_uuid, alias)
        machine.alias = alias
        session.flush()  # the unique index speaks now, inside this transaction
        return RenameParams(alias=alias, old_alias=old).to_json()

    try:
        return start_machine_job(ctx, machine_uuid, "rename", CHANGEABLE, caller, prepare)
    except IntegrityError as exc:
        if ALIAS_INDEX in str(exc.orig):
            raise Conflict(f"a machine named {alias!r} already exists",
                           code="DuplicateName") from exc
        raise


def destroy_machine(ctx: ServiceContext, machine_uuid: str,
                    caller: dict[str, Any]) -> dict[str, Any]:
    return start_machine_job(ctx, machine_uuid, "destroy",
                      ("running", "stopped", "failed", "unknown"), caller)


def list_machines(ctx: ServiceContext, limit: int = 1000, offset: int = 0,
                  **filters: Any) -> tuple[list[dict[str, Any]], int]:
    columns = {"owner_uuid": Machine.owner_uuid, "state": Machine.state,
               "server_uuid": Machine.server_uuid, "package_uuid": Machine.package_uuid,
               "image_uuid": Machine.image_uuid, "alias": Machine.alias}
    conditions = [columns[k] == v for k, v in filters.items() if v is not None and k in columns]
    if filters.get("state") is None:
        conditions.append(Machine.state != "destroyed")
    with ctx.read() as session:
        total = session.scalar(select(func.count()).select_from(Machine).where(*conditions))
        rows = session.scalars(
            select(Machine).where(*conditions).order_by(Machine.created_at, Machine.uuid)
            .limit(limit).offset(offset)
        ).all()
        return [machine_to_dict(m) for m in rows], int(total or 0)


def get_machine(ctx: ServiceContext, machine_uuid: str) -> dict[str, Any]:
    with ctx.read() as session:
        return machine_to_dict(load_machine(session, machine_uuid))
