"""``sdc image import|build-busybox|create-from`` and ``sdc vm resize|rename|snapshot``:
image files and the changes to a machine's definition. Added to the groups of
:mod:`headnode.cli.main` when it is imported."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import requests

from headnode.cli.client import ApiError, ApiUnreachable, error_from_response
from headnode.cli.main import (
    SdcGroup,
    client,
    console,
    emit,
    fmt_time,
    follow_job,
    image,
    json_option,
    render_object,
    vm,
    wait_option,
)

#: uploading an image file may take much longer than a JSON request
UPLOAD_TIMEOUT = 3600.0
CHUNK = 1 << 20


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
            resp = ops.session.put(url, data=fh, timeout=UPLOAD_TIMEOUT,
                                   headers={"Content-Type": "application/octet-stream"})
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


# ---------------------------------------------------------------------------- machines


def start_or_follow(answer: dict[str, Any], machine_uuid: str, what: str, wait: bool) -> None:
    if wait and answer.get("job_uuid"):
        follow_job(answer["job_uuid"], machine_uuid)
        return
    emit(answer, lambda a: click.echo(f"{what} of {machine_uuid}: job {a.get('job_uuid')}"))


@vm.command("resize")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("package_ref", metavar="PACKAGE")
@wait_option
@json_option
def vm_resize(machine_uuid: str, package_ref: str, wait: bool) -> None:
    """Give a machine another package's RAM, disk and CPU."""
    answer = client().post(f"/ops/machines/{machine_uuid}",
                           params={"action": "resize", "package": package_ref})
    start_or_follow(answer, machine_uuid, "resize", wait)


@vm.command("rename")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("alias")
@wait_option
@json_option
def vm_rename(machine_uuid: str, alias: str, wait: bool) -> None:
    """Give a machine a new alias (its hostname)."""
    answer = client().post(f"/ops/machines/{machine_uuid}",
                           params={"action": "rename", "alias": alias})
    start_or_follow(answer, machine_uuid, "rename", wait)


@vm.group(cls=SdcGroup)
def snapshot() -> None:
    """Snapshots of a machine's dataset: create, list, get, rollback, delete."""


@snapshot.command("create")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_create(machine_uuid: str, name: str, wait: bool) -> None:
    answer = client().post(f"/ops/machines/{machine_uuid}/snapshots", {"name": name})
    start_or_follow(answer, machine_uuid, f"snapshot {name}", wait)


@snapshot.command("list")
@click.argument("machine_uuid", metavar="UUID")
@json_option
def snapshot_list(machine_uuid: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}/snapshots"), render_snapshots)


def render_snapshots(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("name", "state", "created", "updated")
    for row in rows:
        table.add_row(row.get("name", ""), row.get("state", ""),
                      fmt_time(row.get("created_at")), fmt_time(row.get("updated_at")))
    console().print(table)


@snapshot.command("get")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@json_option
def snapshot_get(machine_uuid: str, name: str) -> None:
    emit(client().get(f"/ops/machines/{machine_uuid}/snapshots/{name}"), render_object)


@snapshot.command("rollback")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_rollback(machine_uuid: str, name: str, wait: bool) -> None:
    """Restore the machine's dataset to the snapshot."""
    answer = client().post(f"/ops/machines/{machine_uuid}/snapshots/{name}")
    start_or_follow(answer, machine_uuid, f"rollback to {name}", wait)


@snapshot.command("delete")
@click.argument("machine_uuid", metavar="UUID")
@click.argument("name")
@wait_option
@json_option
def snapshot_delete(machine_uuid: str, name: str, wait: bool) -> None:
    answer = client().delete(f"/ops/machines/{machine_uuid}/snapshots/{name}")
    start_or_follow(answer, machine_uuid, f"delete of snapshot {name}", wait)
