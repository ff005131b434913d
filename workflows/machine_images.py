"""An image made from a machine: the node snapshots the machine, archives it and PUTs the
file to a URL signed for it; the upload records what arrived, and this job activates the
image only if the node's own measure of the file agrees."""

from __future__ import annotations

from typing import Any

from headnode.imagestore import ImageStore
from headnode.store.models import Image
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.machines import RECORD_TIMEOUT
from workflows.params import CreateImageParams

CREATE_IMAGE_TIMEOUT = 1800


def _new_image(ctx: StepContext) -> Image:
    image_uuid = CreateImageParams.of(ctx.job).image_uuid
    image = ctx.session.get(Image, image_uuid)
    if image is None:
        raise StepFailed("ImageNotFound", f"image {image_uuid} not found")
    return image


def create_image_params(ctx: StepContext) -> dict[str, Any]:
    image = _new_image(ctx)
    spec = {"uuid": image.uuid, "name": image.name, "version": image.version,
            "os": image.os, "type": image.type, "size_mb": image.size_mb, "files": []}
    return {"uuid": ctx.job.machine_uuid, "image": spec,
            "upload": ImageStore(ctx.settings).upload_for(ctx.job.server_uuid or "", image)}


def activate_image(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    image = _new_image(ctx)
    made = result.get("image") or {}
    received = list(image.files or [])
    if not received or not ImageStore(ctx.settings).has_file(image.uuid):
        raise StepFailed("ImageNotUploaded", "the node reported an image but no file arrived")
    arrived = received[0]
    if (made.get("sha256"), made.get("size")) != (arrived["sha256"], arrived["size"]):
        raise StepFailed("ImageMismatch",
                         f"the node made sha256 {made.get('sha256')} ({made.get('size')} bytes), "
                         f"the store received {arrived['sha256']} ({arrived['size']} bytes)")
    # the node says what it made (tar on Linux, a ZFS send stream on SmartOS); an agent
    # from before formats made a tarball, the format a file entry without one has
    image.files = [{**arrived, "compression": made.get("compression") or "gzip",
                    **({"format": made["format"]} if made.get("format") else {})}]
    image.size_mb = max(image.size_mb, -(-int(arrived["size"]) // (1 << 20)))
    image.state = "active"
    return {"image": image.uuid, "sha256": arrived["sha256"], "size": arrived["size"]}


def fail_image(ctx: StepContext) -> dict[str, Any]:
    image = _new_image(ctx)
    image.state = "failed"
    removed = ImageStore(ctx.settings).remove(image.uuid)
    return {"image": image.uuid, "state": "failed", "file_removed": removed}


CREATE_IMAGE = register(Workflow(
    name="create_image",
    chain=(Step("create_image", CREATE_IMAGE_TIMEOUT, agent_op="image_create_from_machine",
                params=create_image_params, on_result=activate_image),),
    onerror=(Step("fail_image", RECORD_TIMEOUT, run=fail_image, retries=2),),
    timeout=CREATE_IMAGE_TIMEOUT + 60,
))
