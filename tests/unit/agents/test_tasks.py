"""The task contract: ``agent.<op>(server_uuid, params, reply)`` always yields an outcome and,
with a reply address, always sends it to the head node."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from agents import tasks
from agents.backends.base import NodeBackend
from schemas.agent import (
    AGENT_TASKS,
    HEADNODE_QUEUE,
    NODES_QUEUE,
    ServerStatusSchema,
    TaskOutcomeSchema,
    agent_task,
)
from sdccommon import broker
from tests.unit.agents.conftest import SentTasks

SpecFactory = Callable[..., dict[str, Any]]
REPLY = {"job_uuid": "3f0a9c1e-0000-4000-8000-000000000001", "step": 2, "attempt": 1}
#: a machine no node has
ABSENT = "0b5e1c2d-0000-4000-8000-0000000000ab"


def call(op: str, server_uuid: str, params: Any, reply: Any = REPLY) -> dict[str, Any]:
    """Run the registered Celery task in this process, as a worker would."""
    outcome: dict[str, Any] = tasks.TASKS[op].apply(args=[server_uuid, params, reply]).get()
    assert TaskOutcomeSchema().validate(outcome) == {}, outcome
    assert outcome["started_at"] <= outcome["finished_at"]
    return outcome


def the_reply(sent: SentTasks) -> dict[str, Any]:
    (name, args, options), = sent.named(tasks.EVENT_TASK_REPLY)
    assert options["queue"] == HEADNODE_QUEUE
    assert args[0] == REPLY
    outcome: dict[str, Any] = args[1]
    return outcome


def test_every_op_of_the_contract_is_a_task() -> None:
    for op in AGENT_TASKS:
        assert agent_task(op) in tasks.app.tasks
    conf = tasks.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 3600, "priority_steps": [0],
                                             **broker.SOCKET_OPTIONS}


def test_create_replies_with_the_machine(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict, machine_spec: SpecFactory
) -> None:
    assert call("image_ensure_present", hosted.server_uuid, {"image": image_spec}, None)["ok"]
    spec = machine_spec()
    outcome = call("machine_create", hosted.server_uuid, spec)
    assert outcome["ok"] and outcome["error"] is None
    assert outcome["server_uuid"] == hosted.server_uuid
    assert outcome["result"]["machine"]["uuid"] == spec["uuid"]
    assert outcome["result"]["machine"]["state"] == "running"
    assert the_reply(sent) == outcome


def test_a_batch_runs_its_operations_in_order_and_replies_once(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict, machine_spec: SpecFactory
) -> None:
    spec = machine_spec()
    outcome = call("batch", hosted.server_uuid, {"ops": [
        {"op": "image_ensure_present", "params": {"image": image_spec}},
        {"op": "machine_create", "params": spec}]})
    ensured, created = outcome["result"]["outcomes"]
    assert ensured["ok"] and ensured["result"]["image"]["uuid"] == image_spec["uuid"]
    assert created["ok"] and created["result"]["machine"]["state"] == "running"
    assert ensured["finished_at"] <= created["started_at"]
    assert the_reply(sent) == outcome  # one reply for the whole batch
    assert hosted.machine_load(spec["uuid"])["state"] == "running"


def test_a_batch_stops_at_the_first_failure(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict, machine_spec: SpecFactory
) -> None:
    spec = machine_spec()
    outcome = call("batch", hosted.server_uuid, {"ops": [
        {"op": "machine_create", "params": {"uuid": "x", "ram_mb": 0}},
        {"op": "image_ensure_present", "params": {"image": image_spec}}]})
    (refused,) = outcome["result"]["outcomes"]
    assert refused["error"]["code"] == "InvalidParams"
    assert image_spec["uuid"] not in hosted.status()["images"]  # never reached
    assert spec["uuid"] not in {m["uuid"] for m in hosted.status()["machines"]}


@pytest.mark.parametrize("ops, message", [
    ([], "ops"),
    ([{"op": "no_such_op", "params": {}}], "no_such_op"),
    ([{"op": "batch", "params": {"ops": []}}], "another batch"),
])
def test_a_bad_batch_is_an_error(hosted: NodeBackend, sent: SentTasks,
                                 ops: list[Any], message: str) -> None:
    outcome = call("batch", hosted.server_uuid, {"ops": ops}, None)
    errors = [outcome["error"]] if outcome["error"] else [
        o["error"] for o in outcome["result"]["outcomes"]]
    assert errors and message in errors[0]["message"]


def test_image_result_and_no_reply_without_address(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict
) -> None:
    outcome = call("image_ensure_present", hosted.server_uuid, {"image": image_spec}, None)
    assert outcome["result"]["image"]["uuid"] == image_spec["uuid"]
    assert sent.calls == []


def test_machine_actions(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict, machine_spec: SpecFactory
) -> None:
    hosted.image_ensure_present(image_spec)
    spec = machine_spec()
    hosted.machine_create(spec)
    ref = {"uuid": spec["uuid"]}
    states = [
        call(op, hosted.server_uuid, ref, None)["result"]["machine"]["state"]
        for op in ("machine_stop", "machine_start", "machine_reboot", "machine_load",
                   "machine_destroy", "machine_destroy")
    ]
    assert states == ["stopped", "running", "running", "running", "destroyed", "destroyed"]


def test_metadata_update_replies_with_what_the_node_holds(
    hosted: NodeBackend, sent: SentTasks, image_spec: dict, machine_spec: SpecFactory
) -> None:
    hosted.image_ensure_present(image_spec)
    spec = machine_spec(tags={"role": "web"})
    hosted.machine_create(spec)
    call("machine_update_metadata", hosted.server_uuid,
         {"uuid": spec["uuid"], "set_tags": {"env": "prod"}, "remove_tags": ["role"],
          "set_customer_metadata": {"motd": "hi"}})
    outcome = the_reply(sent)
    assert outcome["ok"], outcome
    assert outcome["result"] == {"tags": {"env": "prod"}, "customer_metadata": {"motd": "hi"}}
    bad = call("machine_update_metadata", hosted.server_uuid,
               {"uuid": spec["uuid"], "set_customer_metadata": {"n": 3}}, None)
    assert (bad["ok"], bad["error"]["code"]) == (False, "InvalidParams")


def test_invalid_params_are_an_error_reply(hosted: NodeBackend, sent: SentTasks) -> None:
    outcome = call("machine_create", hosted.server_uuid, {"uuid": "x", "ram_mb": 0})
    assert not outcome["ok"] and outcome["result"] is None
    assert outcome["error"]["code"] == "InvalidParams"
    assert "ram_mb" in outcome["error"]["message"]
    assert the_reply(sent) == outcome


def test_unknown_fields_are_ignored(hosted: NodeBackend, sent: SentTasks) -> None:
    outcome = call("machine_destroy", hosted.server_uuid, {"uuid": ABSENT, "future": 1}, None)
    assert outcome["ok"]


def test_unknown_server(hosted: NodeBackend, sent: SentTasks) -> None:
    other = str(uuid.uuid4())
    outcome = call("machine_load", other, {"uuid": ABSENT})
    assert outcome["error"]["code"] == "UnknownServer"
    assert outcome["server_uuid"] == other
    assert the_reply(sent) == outcome


def test_backend_errors_keep_their_code(hosted: NodeBackend, sent: SentTasks) -> None:
    outcome = call("machine_load", hosted.server_uuid, {"uuid": ABSENT})
    assert outcome["error"]["code"] == "MachineNotFound"
    assert ABSENT in outcome["error"]["message"]


def test_injected_faults_through_the_sim_faults_task(
    hosted: NodeBackend, sent: SentTasks
) -> None:
    faults = {"fail": {"machine_stop": "stuck"}, "latency_ms": {"machine_load": 5}}
    outcome = call("sim_faults", hosted.server_uuid, faults, None)
    assert outcome["result"] == {"faults": faults}
    failed = call("machine_stop", hosted.server_uuid, {"uuid": ABSENT})
    assert failed["error"] == {"code": "InjectedFault", "message": "stuck"}


def test_unexpected_exceptions_still_reply(
    hosted: NodeBackend, sent: SentTasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(uuid: str) -> dict[str, Any]:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(hosted, "machine_start", broken)
    outcome = call("machine_start", hosted.server_uuid, {"uuid": ABSENT})
    assert outcome["error"] == {"code": "InternalError", "message": "RuntimeError: kaboom"}
    assert the_reply(sent) == outcome


def test_report_status_sends_the_status_at_once(hosted: NodeBackend, sent: SentTasks) -> None:
    outcome = call("report_status", hosted.server_uuid, {})
    (name, args, options), = sent.named(tasks.EVENT_STATUS)
    assert options["queue"] == NODES_QUEUE  # node events travel apart from the jobs
    assert ServerStatusSchema().validate(args[0]) == {}
    assert args[0]["full"] is True  # asked: every machine, not a delta
    assert args[0]["server_uuid"] == hosted.server_uuid
    assert outcome["result"] == {"status": args[0]}
    assert the_reply(sent) == outcome


def test_sysinfo_event_uses_smartos_names(hosted: NodeBackend, sent: SentTasks) -> None:
    tasks.send_sysinfo(hosted.sysinfo())
    (name, args, options), = sent.calls
    assert name == "events.server_sysinfo" and options["queue"] == NODES_QUEUE
    assert args[0]["UUID"] == hosted.server_uuid and "MiB of Memory" in args[0]
