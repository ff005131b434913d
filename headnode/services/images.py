"""Image manifests (IMGAPI): what machines are cloned from, and their files in the image
store (an operator's import, a node's upload of an image made from a machine)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from headnode.imagestore import FileMismatch, ImageStore, manifest_file
from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.machines import CHANGEABLE, start_machine_job
from headnode.store.models import Image, Machine, new_uuid
from schemas.image_manifest import name_problem, version_problem
from workflows.params import CreateImageParams


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
    _check_imgadm_rules(attrs["name"], attrs.get("version"))
    with ctx.transaction() as session:
        if "uuid" in attrs and session.get(Image, attrs["uuid"]) is not None:
            raise Conflict(f"image {attrs['uuid']} already exists", code="DuplicateUuid")
        _check_name_free(session, attrs["name"], attrs.get("version", "1.0.0"),
                         attrs.get("owner_uuid"))
        if attrs.get("files"):
            # Its file is still to come (PUT .../file); until then no machine can use it.
            attrs["state"] = "unactivated"
        image = Image(**attrs)
        session.add(image)
    return image


def _check_name_free(session: Session, name: str, version: str, owner_uuid: str | None) -> None:
    # As IMGAPI: one owner cannot have two images with the same name and version.
    duplicate = exists().where(
        Image.name == name,
        Image.version == version,
        Image.owner_uuid.is_(None) if owner_uuid is None else Image.owner_uuid == owner_uuid,
    )
    if session.scalar(select(duplicate)):
        raise Conflict(f"image {name}@{version} already exists", code="DuplicateName")


def _check_imgadm_rules(name: Any, version: Any) -> None:
    """A manifest a SmartOS node's imgadm would refuse is refused here, whatever made it."""
    said = name_problem(name)
    if said is not None:
        raise InvalidArgument("name", said)
    said = version_problem(version) if version is not None else None
    if said is not None:
        raise InvalidArgument("version", said)


def image_to_dict(image: Image) -> dict[str, Any]:
    return {
        "uuid": image.uuid, "name": image.name, "version": image.version, "os": image.os,
        "type": image.type, "state": image.state, "owner_uuid": image.owner_uuid,
        "public": image.public, "description": image.description, "size_mb": image.size_mb,
        "requirements": image.requirements, "traits": image.traits, "tags": image.tags,
        "init": image.init, "files": image.files,
        "created_at": image.created_at, "updated_at": image.updated_at,
    }


# -- files ----------------------------------------------------------------------------------


def import_image_file(ctx: ServiceContext, image_uuid: str, chunks: Iterable[bytes]) -> Image:
    """An operator's upload of the file an unactivated manifest lists: kept only if its size
    and sha256 match the manifest; then the image is active."""
    image = get_image(ctx, image_uuid)
    if image.state != "unactivated":
        raise Conflict(f"image {image_uuid} is {image.state}: only an unactivated image "
                       "takes a file", code="InvalidState")
    expect = manifest_file(image)
    if expect is None or "sha256" not in expect:
        raise InvalidArgument("files", "the manifest lists no file with a sha256")
    try:
        ImageStore(ctx.settings).receive(image_uuid, chunks, expect)
    except FileMismatch as exc:
        raise InvalidArgument(exc.field, exc.message) from exc
    with ctx.transaction() as session:
        session.execute(update(Image).where(Image.uuid == image_uuid,
                                            Image.state == "unactivated")
                        .values(state="active").execution_options(synchronize_session=False))
    return get_image(ctx, image_uuid)


def receive_node_upload(ctx: ServiceContext, image_uuid: str,
                        chunks: Iterable[bytes]) -> dict[str, Any]:
    """A node's upload of an image it made from a machine (a signed PUT). The file and what
    it measured to be are kept; the image's job checks them against the node's report."""
    image = get_image(ctx, image_uuid)
    if image.state != "creating":
        raise Conflict(f"image {image_uuid} is {image.state}, not being created",
                       code="InvalidState")
    if image.files:
        # The first complete upload wins: a second run of the same task (a re-sent agent
        # step) must not swap the file under the report of the first.
        raise Conflict(f"image {image_uuid} has its file already", code="InvalidState")
    stored = ImageStore(ctx.settings).receive(image_uuid, chunks, None)
    measured = {"sha256": stored.sha256, "size": stored.size}
    with ctx.transaction() as session:
        session.execute(update(Image).where(Image.uuid == image_uuid,
                                            Image.state == "creating")
                        .values(files=[measured]).execution_options(synchronize_session=False))
    return measured


def image_file_path(ctx: ServiceContext, image_uuid: str) -> Path:
    """Where the image's file is, for sending it; NotFound if the store has none."""
    get_image(ctx, image_uuid)
    store = ImageStore(ctx.settings)
    if not store.has_file(image_uuid):
        raise NotFound("image file", image_uuid)
    return store.path(image_uuid)


# -- an image made from a machine -----------------------------------------------------------


def create_image_from_machine(ctx: ServiceContext, machine_uuid: str, name: str, version: str,
                              caller: dict[str, Any], description: str = "") -> dict[str, Any]:
    """Start the job that snapshots a machine on its node, archives it and uploads it here.
    The image exists at once in state ``creating``, owned by the machine's owner."""
    _check_imgadm_rules(name, version)
    made: list[Image] = []

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        origin = session.get(Image, machine.image_uuid)
        _check_name_free(session, name, version, machine.owner_uuid)
        image = Image(uuid=new_uuid(), name=name, version=version, state="creating",
                      os=origin.os if origin else "other",
                      type=origin.type if origin else "zone-dataset",
                      requirements=dict(origin.requirements) if origin else {},
                      # it boots as its origin did, and is logged in to as its origin is
                      tags=dict(origin.tags or {}) if origin else {},
                      init=dict(origin.init) if origin and origin.init else None,
                      owner_uuid=machine.owner_uuid, public=False, description=description,
                      files=[])
        session.add(image)
        made.append(image)
        return CreateImageParams(image_uuid=image.uuid).to_json()

    answer = start_machine_job(ctx, machine_uuid, "create_image", CHANGEABLE, caller, prepare)
    return {"image": image_to_dict(made[0]), "job_uuid": answer["job_uuid"]}
