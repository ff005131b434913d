"""A job's typed params (workflows.params) store the very JSON the plain dicts did, so a job
written before an upgrade runs after it, and read back unchanged through the database."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.store.models import Job, new_uuid
from workflows.engine import new_job
from workflows.params import (
    CreateImageParams,
    JobParams,
    MetadataParams,
    ProvisionParams,
    PurgeParams,
    RenameParams,
    ResizeParams,
    SnapshotParams,
)

UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
OTHER = "9e8d7c6b-5a49-4837-a261-504f3e2d1c0b"

#: (workflow, typed params, the JSON the services wrote as plain dicts before)
CASES: list[tuple[str, JobParams, dict[str, Any]]] = [
    ("provision", ProvisionParams(package="sample-1G", image=UUID),
     {"package": "sample-1G", "image": UUID}),
    ("resize", ResizeParams(package=OTHER, package_name="sample-2G", ram_mb=2048,
                            disk_mb=20480, cpu_cap=200, vcpus=2, max_lwps=4000,
                            delta={"ram_mb": 1024, "disk_mb": -5120, "cpu": 100},
                            held={"ram_mb": 1024, "disk_mb": 0, "cpu": 100}),
     {"package": OTHER, "package_name": "sample-2G", "ram_mb": 2048, "disk_mb": 20480,
      "cpu_cap": 200, "vcpus": 2, "max_lwps": 4000,
      "delta": {"ram_mb": 1024, "disk_mb": -5120, "cpu": 100},
      "held": {"ram_mb": 1024, "disk_mb": 0, "cpu": 100}}),
    ("rename", RenameParams(alias="web-2", old_alias="web-1"),
     {"alias": "web-2", "old_alias": "web-1"}),
    ("snapshot_create", SnapshotParams(snapshot="before-upgrade"),
     {"snapshot": "before-upgrade"}),
    ("snapshot_start", SnapshotParams(snapshot="s1"), {"snapshot": "s1"}),
    ("create_image", CreateImageParams(image_uuid=OTHER), {"image_uuid": OTHER}),
    ("purge_orphan", PurgeParams(machine=UUID), {"machine": UUID}),
]

METADATA_CASES: list[tuple[str, MetadataParams, dict[str, Any]]] = [
    ("set_tags", MetadataParams("tags", {"role": "db", "n": 3}, []),
     {"set_tags": {"role": "db", "n": 3}, "remove_tags": []}),
    ("remove_metadata", MetadataParams("customer_metadata", {}, ["user-script"]),
     {"set_customer_metadata": {}, "remove_customer_metadata": ["user-script"]}),
]


def _stored(ctx: Any, workflow: str, params: dict[str, Any]) -> Job:
    """Write the job as a service does, and read it back in another session."""
    job_uuid = new_uuid()
    with ctx.transaction() as session:
        new_job(session, workflow, machine_uuid=None, server_uuid=None, owner_uuid=None,
                params=params, job_uuid=job_uuid)
    with ctx.read() as session:
        job = session.get(Job, job_uuid)
        assert job is not None
        session.expunge(job)
        return job


def _without_engine_keys(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in ("chain", "onerror")}


@pytest.mark.parametrize(("workflow", "typed", "legacy"), CASES,
                         ids=[c[0] for c in CASES])
def test_params_round_trip_unchanged(ctx: Any, workflow: str, typed: JobParams,
                                     legacy: dict[str, Any]) -> None:
    assert typed.to_json() == legacy
    job = _stored(ctx, workflow, typed.to_json())
    assert _without_engine_keys(job.params) == legacy
    assert type(typed).of(job) == typed
    # a job a service wrote with the plain dict reads the same
    assert type(typed).of(_stored(ctx, workflow, legacy)) == typed


@pytest.mark.parametrize(("workflow", "typed", "legacy"), METADATA_CASES,
                         ids=[c[0] for c in METADATA_CASES])
def test_metadata_params_round_trip_unchanged(ctx: Any, workflow: str, typed: MetadataParams,
                                              legacy: dict[str, Any]) -> None:
    assert typed.to_json() == legacy
    job = _stored(ctx, workflow, typed.to_json())
    assert _without_engine_keys(job.params) == legacy
    assert MetadataParams.of(job, typed.column) == typed


def test_optional_keys_may_be_missing() -> None:
    resize = {k: v for k, v in CASES[1][2].items() if k != "held"}
    assert ResizeParams.from_json(resize).held == {}
    assert ResizeParams.from_json({**resize, "held": None}).held == {}
    assert MetadataParams.from_json({}, "tags") == MetadataParams("tags", {}, [])


def test_a_required_key_missing_is_an_error_as_before() -> None:
    with pytest.raises(KeyError, match="old_alias"):
        RenameParams.from_json({"alias": "web-2"})
