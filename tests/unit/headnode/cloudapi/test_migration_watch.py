"""CloudAPI's migration watch stream (``POST .../migrate?action=watch``) on the real app and
database: the JSON lines it sends and when it ends. The migrations are records written here
(the jobs are not run); the whole flow through the triton CLI is in
tests/integration/test_migration_api.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from headnode.api.cloudapi import migrations as watch
from headnode.store.models import Job, Migration, new_uuid
from tests.unit.headnode.cloudapi.conftest import World


def record(sdc: Any, machine: dict[str, Any], owner: str, *, state: str, phase: str,
           job_execution: str, history: list[dict[str, Any]],
           sent: int = 0) -> str:
    job_uuid = new_uuid()
    with sdc.transaction() as session:
        session.add(Job(uuid=job_uuid, name=f"migrate_{phase}", machine_uuid=machine["id"],
                        execution=job_execution))
        session.add(Migration(uuid=new_uuid(), machine_uuid=machine["id"], owner_uuid=owner,
                              source_server_uuid=machine["compute_node"], state=state,
                              phase=phase, job_uuid=job_uuid, sent_bytes=sent,
                              total_bytes=sent or None, rate_bps=1000 if sent else None,
                              progress_history=history))
    return job_uuid


def lines(answer: Any) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"].startswith("application/x-json-stream")
    return [json.loads(row) for row in answer.get_data(as_text=True).splitlines()]


STEP = {"phase": "begin", "state": "success", "message": "reserved room", "bytes": None,
        "total_bytes": None, "at": "2026-12-03T07:00:00+00:00"}


def test_an_ended_phase_gives_its_steps_and_the_end_at_once(
        call: Any, sdc: Any, world: World, machine_of: Any) -> None:
    machine = machine_of(world.alice)
    sync = {**STEP, "phase": "sync", "message": "synced", "bytes": 2048, "total_bytes": 4096}
    record(sdc, machine, world.alice.uuid, state="paused", phase="sync",
           job_execution="succeeded", history=[STEP, sync])
    events = lines(call(world.alice, "post", f"/my/machines/{machine['id']}/migrate"
                                             "?action=watch"))
    assert events == [
        {"type": "progress", "phase": "begin", "state": "success", "message": "reserved room",
         "current_progress": 1, "total_progress": 1},
        {"type": "progress", "phase": "sync", "state": "success", "message": "synced",
         "current_progress": 2048, "total_progress": 4096},
        {"type": "end", "phase": "sync", "state": "paused"},
    ]


def test_a_phase_whose_job_ended_without_its_record_ends_the_stream(
        call: Any, sdc: Any, world: World, machine_of: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "STALE_AFTER", 0.2)
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 0.05)
    machine = machine_of(world.alice)
    record(sdc, machine, world.alice.uuid, state="running", phase="sync",
           job_execution="failed", history=[STEP], sent=5000)
    events = lines(call(world.alice, "post", f"/my/machines/{machine['id']}/migrate",
                        json={"action": "watch"}))
    assert events[1] == {"type": "progress", "phase": "sync", "state": "running",
                         "current_progress": 5000, "total_progress": 5000,
                         "transfer_bytes_second": 1000, "eta_ms": 0}
    assert events[-1] == {"type": "end", "phase": "sync", "state": "running"}
    assert len(events) == 3  # the bytes are sent once, not at every read


def test_no_migration_or_another_accounts_is_404(call: Any, sdc: Any, world: World,
                                                 machine_of: Any) -> None:
    machine = machine_of(world.alice)
    path = f"/my/machines/{machine['id']}/migrate?action=watch"
    assert call(world.alice, "post", path).status_code == 404
    record(sdc, machine, world.alice.uuid, state="paused", phase="begin",
           job_execution="succeeded", history=[STEP])
    assert call(world.bob, "post", path).status_code == 404
    assert call(world.bob, "get", f"/my/migrations/{machine['id']}").status_code == 404
    assert call(world.bob, "get", "/my/migrations").get_json() == []
    listed = call(world.alice, "get", "/my/migrations").get_json()
    assert [(m["machine"], m["phase"], m["state"]) for m in listed] == [
        (machine["id"], "begin", "paused")]
    # triton inst migration get requires a duration on every step
    assert [e["duration_ms"] for e in listed[0]["progress_history"]] == [0]
