"""Packages (PAPI): the resources one machine gets, named so tenants can pick them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.exc import IntegrityError

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.store.models import Machine, Package


def list_packages(ctx: ServiceContext, active: bool | None = None) -> list[Package]:
    query = select(Package).order_by(Package.name)
    if active is not None:
        query = query.where(Package.active == active)
    with ctx.read() as session:
        return list(session.scalars(query))


def get_package(ctx: ServiceContext, ident: str) -> Package:
    """By uuid or by name (names are unique)."""
    with ctx.read() as session:
        package = session.scalar(
            select(Package).where(or_(Package.uuid == ident, Package.name == ident))
        )
    if package is None:
        raise NotFound("package", ident)
    return package


def create_package(ctx: ServiceContext, attrs: Mapping[str, Any]) -> Package:
    name = attrs["name"]
    try:
        with ctx.transaction() as session:
            if session.scalar(select(exists().where(Package.name == name))):
                raise Conflict(f"package {name} already exists", code="DuplicateName")
            package = Package(**attrs)
            session.add(package)
    except IntegrityError as exc:
        # Two creates raced past the check; the unique index decided.
        raise Conflict(f"package {name} already exists", code="DuplicateName") from exc
    return package


def delete_package(ctx: ServiceContext, ident: str) -> None:
    package = get_package(ctx, ident)
    with ctx.transaction() as session:
        # Machines keep pointing at their package (even destroyed ones, for billing):
        # such a package can only be deactivated.
        if session.scalar(select(exists().where(Machine.package_uuid == package.uuid))):
            raise Conflict(
                f"package {package.name} is used by machines; deactivate it instead",
                code="PackageInUse",
            )
        row = session.get(Package, package.uuid, with_for_update=True)
        if row is not None:
            session.delete(row)
