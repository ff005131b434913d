"""What a request names, found: an owner, a package or an image by uuid or by name.

Creates, resizes, dry runs and simulations all resolve names the same way and refuse the
same things (no such row, an inactive package or image) with the same messages.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from headnode.services.errors import InvalidArgument
from headnode.store.models import Account, Image, Package


def is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


# The queries take the identifier as a value or, for the cached lookup, as a bound parameter.

def owner_query(ident: Any, by_uuid: bool) -> Select[Account]:
    return select(Account).where((Account.uuid if by_uuid else Account.login) == ident)


def package_query(ident: Any, by_uuid: bool) -> Select[Package]:
    return select(Package).where((Package.uuid if by_uuid else Package.name) == ident)


def image_query(ident: Any, by_uuid: bool) -> Select[Image]:
    if by_uuid:
        return select(Image).where(Image.uuid == ident)
    # a name means its newest active version
    return (select(Image).where(Image.name == ident, Image.state == "active")
            .order_by(Image.created_at.desc()).limit(1))


def usable_owner(account: Account | None, ident: str) -> Account:
    if account is None:
        raise InvalidArgument("owner", f"no account {ident!r}")
    return account


def usable_package(package: Package | None, ident: str) -> Package:
    if package is None:
        raise InvalidArgument("package", f"no package {ident!r}")
    if not package.active:
        raise InvalidArgument("package", f"package {package.name} is not active")
    return package


def usable_image(image: Image | None, ident: str) -> Image:
    if image is None:
        raise InvalidArgument("image", f"no image {ident!r}")
    if image.state != "active":
        raise InvalidArgument("image", f"image {image.name} is {image.state}, not active")
    return image


def resolve_owner(session: Session, ident: str) -> Account:
    query = owner_query(ident, is_uuid(ident))
    return usable_owner(session.scalars(query).one_or_none(), ident)


def resolve_package(session: Session, ident: str) -> Package:
    query = package_query(ident, is_uuid(ident))
    return usable_package(session.scalars(query).one_or_none(), ident)


def resolve_image(session: Session, ident: str) -> Image:
    return usable_image(session.scalars(image_query(ident, is_uuid(ident))).first(), ident)
