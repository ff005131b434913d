"""What a failed task or a rejected message is about (agents/tasklog.py)."""

from __future__ import annotations

import json
from typing import Any

from kombu import Message

from sdccommon import tasklog
from workflows.celery_app import first_arg as headnode_first_arg


def agent_first_arg(task: str) -> str | None:
    return "server" if task.startswith("agent.") else None


def test_a_step_message_names_its_job() -> None:
    found = tasklog.subject("workflows.run_step", ["J", 3], {}, headnode_first_arg)
    assert found == {"job": "J"}


def test_a_reply_names_its_job_and_the_outcome_its_server() -> None:
    found = tasklog.subject("events.task_reply",
                            [{"job_uuid": "J", "step": 1}, {"server_uuid": "S", "ok": False}],
                            {}, headnode_first_arg)
    assert found == {"job": "J", "server": "S"}


def test_a_sysinfo_names_its_server_by_the_smartos_key() -> None:
    found = tasklog.subject("events.server_sysinfo", [{"UUID": "S"}], {}, headnode_first_arg)
    assert tasklog.describe(found) == "job ? server S"


def test_an_agent_task_names_its_server_and_the_job_of_its_reply_address() -> None:
    found = tasklog.subject("agent.machine_create", ["S", {}, {"job_uuid": "J"}], {},
                            agent_first_arg)
    assert found == {"server": "S", "job": "J"}


def message(headers: dict[str, Any], body: str) -> Message:
    return Message(body=body, content_type="application/json", content_encoding="utf-8",
                   headers=headers)


def test_payload_of_a_protocol_2_message() -> None:
    found = tasklog.payload(message({"task": "x.y"}, json.dumps([["J", 1], {"k": 2}, {}])))
    assert found == ("x.y", ["J", 1], {"k": 2})


def test_payload_of_an_unreadable_body_is_empty() -> None:
    assert tasklog.payload(message({}, "not json")) == ("?", [], {})
