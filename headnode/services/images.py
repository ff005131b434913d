"""Image manifests (IMGAPI): what machines are cloned from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import exists, select

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.store.models import Image


def list_images(
    ctx: ServiceContext, name: str | None = None, state: str | None = None
) -> list[Image]:
    query = select(Image).order_by(Image.name, Image.version, Image.uuid)
    if name is not None:
        query = query.where(Image.name == name)
    if state is not None:
        query = query.where(Image.state == state)
    with ctx.read() as session:
        return list(session.scalars(query))


def get_image(ctx: ServiceContext, uuid: str) -> Image:
    with ctx.read() as session:
        image = session.get(Image, uuid)
    if image is None:
        raise NotFound("image", uuid)
    return image


def create_image(ctx: ServiceContext, manifest: Mapping[str, Any]) -> Image:
    """Record a manifest. It may bring its own uuid (an image imported from elsewhere)."""
    attrs = {k: (str(v) if k in ("uuid", "owner_uuid") and v is not None else v)
             for k, v in manifest.items()}
    with ctx.transaction() as session:
        if "uuid" in attrs and session.get(Image, attrs["uuid"]) is not None:
            raise Conflict(f"image {attrs['uuid']} already exists", code="DuplicateUuid")
        # As IMGAPI: one owner cannot have two images with the same name and version.
        version = attrs.get("version", "1.0.0")
        duplicate = exists().where(
            Image.name == attrs["name"],
            Image.version == version,
            Image.owner_uuid.is_(None) if attrs.get("owner_uuid") is None
            else Image.owner_uuid == attrs["owner_uuid"],
        )
        if session.scalar(select(duplicate)):
            raise Conflict(
                f"image {attrs['name']}@{version} already exists", code="DuplicateName"
            )
        image = Image(**attrs)
        session.add(image)
    return image
