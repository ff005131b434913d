"""``sdc image create|list|get|import|build-busybox|build-debian|create-from``: the manifests
machines are cloned from, and image files (uploaded, built from busybox or Debian, or made
from a machine)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import requests
from rich.table import Table

from headnode.cli.client import ApiError, ApiUnreachable, error_from_response, untrusted
from headnode.cli.context import SdcGroup, client, json_option, state_of, wait_option
from headnode.cli.output import console, emit, fmt_mib, follow_job, render_object

#: uploading an image file may take much longer than a JSON request
UPLOAD_TIMEOUT = 3600.0
CHUNK = 1 << 20


# ---------------------------------------------------------------------------- manifests


@click.group(cls=SdcGroup)
def image() -> None:
    """Images: the manifests machines are cloned from."""


@image.command("create")
@click.argument("name")
@click.option("--version", "version", required=True)
@click.option("--os", "os_name", type=click.Choice(
    ["smartos", "linux", "windows", "bsd", "illumos", "other"]))
@click.option("--type", "image_type", type=click.Choice(
    ["zone-dataset", "lx-dataset", "zvol", "docker", "other"]))
@click.option("--size-mb", type=click.IntRange(min=0))
@json_option
def image_create(name: str, version: str, os_name: str | None, image_type: str | None,
                 size_mb: int | None) -> None:
    """Add a placeholder manifest (no image file)."""
    body: dict[str, Any] = {"name": name, "version": version}
    for key, value in (("os", os_name), ("type", image_type), ("size_mb", size_mb)):
        if value is not None:
            body[key] = value
    emit(client().post("/ops/images", body), render_object)


@image.command("list")
@json_option
def image_list() -> None:
    emit(client().get("/ops/images"), render_images)


def render_images(images: list[dict[str, Any]]) -> None:
    table = Table("uuid", "name", "version", "os", "type", "state", "size")
    for img in images:
        table.add_row(img.get("uuid", ""), img.get("name", ""), img.get("version", ""),
                      img.get("os", ""), img.get("type", ""), img.get("state", ""),
                      fmt_mib(img.get("size_mb")))
    console().print(table)


@image.command("get")
@click.argument("image_uuid", metavar="UUID")
@json_option
def image_get(image_uuid: str) -> None:
    emit(client().get(f"/ops/images/{image_uuid}"), render_object)


# ---------------------------------------------------------------------------- image files


def file_facts(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    compression = {".gz": "gzip", ".tgz": "gzip", ".bz2": "bzip2", ".xz": "xz"}.get(
        path.suffix, "none")
    return {"sha256": digest.hexdigest(), "size": path.stat().st_size,
            "compression": compression}


def post_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the manifest; one already added but still waiting for its file is reused, so an
    import whose upload failed can simply be run again."""
    try:
        return dict(client().post("/ops/images", manifest))
    except ApiError as err:
        if err.code != "DuplicateUuid" or "uuid" not in manifest:
            raise
        existing = dict(client().get(f"/ops/images/{manifest['uuid']}"))
        if existing.get("state") != "unactivated":
            raise
        return existing


def upload_file(image_uuid: str, path: Path) -> dict[str, Any]:
    ops = client()
    url = ops.url(f"/ops/images/{image_uuid}/file")
    try:
        with open(path, "rb") as fh:
            resp = ops.session.put(url, data=fh, timeout=UPLOAD_TIMEOUT, verify=ops.verify,
                                   headers={"Content-Type": "application/octet-stream"})
    except requests.exceptions.SSLError as exc:
        raise untrusted(ops.base_url, exc) from exc
    except requests.ConnectionError as exc:
        raise ApiUnreachable(ops.base_url, "connection refused") from exc
    if resp.status_code >= 400:
        raise error_from_response(resp)
    return dict(resp.json())


@image.command("import")
@click.argument("manifest_path", metavar="MANIFEST",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("file_path", metavar="FILE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def image_import(manifest_path: Path, file_path: Path) -> None:
    """Add an image: its manifest, then its file (checked against the manifest's sha256
    and size by the head node). A manifest without ``files`` gets them from FILE."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise click.ClickException(f"{manifest_path} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise click.ClickException(f"{manifest_path} must hold a JSON object")
    manifest.pop("state", None)
    if not manifest.get("files"):
        manifest["files"] = [file_facts(file_path)]
    created = post_manifest(manifest)
    emit(upload_file(str(created["uuid"]), file_path), render_object)


@image.command("build-busybox")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Directory for the file and manifest.")
@click.option("--busybox", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=Path("/bin/busybox"), show_default=True,
              help="A static busybox (Debian's busybox-static).")
@json_option
def image_build_busybox(out_dir: Path, busybox: Path) -> None:
    """Build a tiny real Linux image (rootfs tar.gz and manifest) from busybox-static."""
    from headnode.imagebuild import BuildError, build_busybox_image

    try:
        built = build_busybox_image(out_dir, busybox)
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    emit({"manifest": str(built.manifest_path), "file": str(built.file_path),
          "uuid": built.manifest["uuid"]},
         lambda d: click.echo(f"{d['file']}\n{d['manifest']}\n"
                              f"import it: sdc image import {d['manifest']} {d['file']}"))


@image.command("build-debian")
@click.option("--suite", default="bookworm", show_default=True,
              help="Debian suite (bookworm is debian-12).")
@click.option("--include", "include", default="", metavar="PKG,...",
              help="More Debian packages, comma-separated.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Directory for the file and manifest.")
@click.option("--no-cache", is_flag=True, help="Build again even if the image cache "
              "(SDC_IMAGE_CACHE) has this build; the new one replaces it there.")
@json_option
def image_build_debian(suite: str, include: str, out_dir: Path, no_cache: bool) -> None:
    """Build a Debian image with mmdebstrap (sshd, the metadata tools, the init sdc-init,
    user debian): rootfs tar.gz and manifest. A build of the same inputs is reused."""
    from headnode.imagebuild import BuildError
    from headnode.imagebuild_debian import build_debian_image

    state = state_of(click.get_current_context())
    packages = [name.strip() for name in include.split(",") if name.strip()]
    progress = None if state.as_json else lambda line: click.echo(line, err=True)
    try:
        built, reused = build_debian_image(state.settings().image_cache, suite, packages,
                                           out_dir, use_cache=not no_cache, progress=progress)
    except BuildError as exc:
        raise click.ClickException(str(exc)) from exc
    emit({"manifest": str(built.manifest_path), "file": str(built.file_path),
          "uuid": built.manifest["uuid"], "reused": reused},
         lambda d: click.echo(("reused the cached build\n" if d["reused"] else "")
                              + f"{d['file']}\n{d['manifest']}\n"
                              f"import it: sdc image import {d['manifest']} {d['file']}"))


@image.command("create-from")
@click.argument("machine_uuid", metavar="VM")
@click.argument("name")
@click.argument("version")
@click.option("--description", default="")
@wait_option
@json_option
def image_create_from(machine_uuid: str, name: str, version: str, description: str,
                      wait: bool) -> None:
    """Make an image of a machine (snapshot, archive, upload to the image store)."""
    answer = client().post("/ops/images/from-machine",
                           {"machine": machine_uuid, "name": name, "version": version,
                            "description": description})
    if wait:
        follow_job(answer["job_uuid"], machine_uuid)
        return
    emit(answer, lambda a: click.echo(f"image {a['image']['uuid']} ({name}@{version}) is "
                                      f"being made: job {a['job_uuid']}"))
