"""Placement questions asked of the live fleet: the request a create makes, and the dry run
that shows an operator the whole funnel without writing anything."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from headnode.config import HeadnodeSettings
from headnode.placement.affinity import AffinityError, parse_rules
from headnode.placement.pipeline import Pipeline, configured
from headnode.placement.state import PlacementRequest, Policy, merged_traits
from headnode.services import fleet
from headnode.services.context import ServiceContext
from headnode.services.errors import InvalidArgument
from headnode.services.networks import requested_networks
from headnode.services.resolve import resolve_image, resolve_owner, resolve_package
from headnode.store.models import Image, Network, Package
from schemas.image_manifest import file_format


def policy_for(ctx: ServiceContext) -> Policy:
    s = ctx.settings
    return Policy(reservation_ratio=s.reservation_ratio, pool_usable_ratio=s.pool_usable_ratio,
                  ram_overprovision=s.ram_overprovision,
                  cpu_overprovision=s.cpu_overprovision,
                  disk_overprovision=s.disk_overprovision,
                  max_machines=s.max_machines_per_server)


def pipeline_for(ctx: ServiceContext) -> Pipeline:
    """The filters and scorers the settings ask for (checked when they were loaded)."""
    return _pipeline(ctx.settings)


@functools.lru_cache(maxsize=16)
def _pipeline(s: HeadnodeSettings) -> Pipeline:
    # Once per settings (they are frozen): building it on every create cost 15 us.
    return configured(s.placement_filter_names, s.placement_weights, s.placement_strategy,
                      s.placement_candidates)


def parse_affinity(texts: Iterable[str] | None) -> tuple[Any, ...]:
    try:
        return parse_rules(texts)
    except AffinityError as exc:
        raise InvalidArgument("affinity", str(exc)) from exc


def nic_tags_of(networks: Iterable[Network]) -> frozenset[str]:
    """The nic tags a machine on ``networks`` needs its server to provide."""
    return frozenset(n.nic_tag for n in networks)


def build_request(package: Package, image: Image | None, owner_uuid: str = "",
                  affinity: Iterable[str] | None = None,
                  nic_tags: frozenset[str] = frozenset()) -> PlacementRequest:
    """What a machine of ``package`` from ``image`` (on networks of ``nic_tags``) asks of a
    server."""
    return PlacementRequest(
        ram_mb=package.memory, disk_mb=package.disk, cpu_cap=package.cpu_cap or 0,
        owner_uuid=owner_uuid,
        traits=merged_traits(package.traits, image.traits if image else None),
        image_os=image.os if image else "", image_type=image.type if image else "",
        image_uuid=image.uuid if image else "", image_mb=image.size_mb if image else 0,
        # an image without a file (a placeholder, the sim's) has nothing to install
        image_format=file_format(image.type, image.files) if image and image.files else "",
        affinity=parse_affinity(affinity), nic_tags=nic_tags,
    )


def dry_run(ctx: ServiceContext, body: dict[str, Any]) -> dict[str, Any]:
    """The decision a create would get now, with the funnel; nothing is written. The
    networks are the ones named, else (as a create's) the owner's default network."""
    with ctx.read() as session:
        owner = resolve_owner(session, body["owner"]) if body.get("owner") else None
        package = resolve_package(session, body["package"])
        image = resolve_image(session, body["image"])
        networks = requested_networks(session, owner.uuid if owner else "",
                                      body.get("networks"))
        request = build_request(package, image, owner.uuid if owner else "",
                                body.get("affinity"), nic_tags_of(networks))
        snapshot = fleet.load_snapshot(session, request.owner_uuid,
                                       image_uuid=request.image_uuid)
    # every server, whatever the candidate limit: the operator asks why, server by server
    decision = pipeline_for(ctx).visiting_all().decide(snapshot, request, policy_for(ctx))
    answer = decision.to_dict(request)
    answer.update({"dry_run": True, "package": package.name, "image": image.uuid,
                   "owner_uuid": request.owner_uuid or None})
    return answer
