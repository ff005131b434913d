"""A recording transport and an engine on the real PostgreSQL (fixtures of tests/conftest.py).

The transport checks, for every message, that what the message names is already committed:
it reads the job in a session of its own, so a message sent before its step's transaction
commits would show the old attempt and fail the test.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from headnode.store.models import Job, Machine
from tests.unit.headnode.services.conftest import (
    add,
    make_account,
    make_image,
    make_package,
    make_server,
)
from workflows.engine import Engine, Transport

__all__ = ["RecordingTransport", "add", "make_account", "make_image", "make_package",
           "make_server"]


@dataclass
class RecordingTransport(Transport):
    sessions: sessionmaker[Session]
    #: every message in order: ("step", job, attempt) / ("agent", server, op, params, reply)
    #: / ("raw", queue, task, args)
    sent: list[tuple[Any, ...]] = field(default_factory=list)
    #: run_step messages not yet delivered
    steps: deque[tuple[str, int]] = field(default_factory=deque)
    #: agent calls not yet answered: (server, op, params, reply)
    agent: deque[tuple[str, str, dict[str, Any], dict[str, Any]]] = field(default_factory=deque)

    def _committed_attempt(self, job_uuid: str) -> int:
        with self.sessions() as session:
            job = session.get(Job, job_uuid)
            assert job is not None, f"message names job {job_uuid}, not committed yet"
            return job.attempt

    def send_step(self, job_uuid: str, attempt: int) -> None:
        assert self._committed_attempt(job_uuid) == attempt, "sent before the commit"
        self.sent.append(("step", job_uuid, attempt))
        self.steps.append((job_uuid, attempt))

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                   reply: dict[str, Any] | None) -> None:
        assert reply is not None
        assert self._committed_attempt(reply["job_uuid"]) == reply["attempt"], \
            "sent before the commit"
        self.sent.append(("agent", server_uuid, op, params, reply))
        self.agent.append((server_uuid, op, params, reply))

    def send_raw(self, queue: str, task: str, args: list[Any]) -> None:
        self.sent.append(("raw", queue, task, args))

    def kinds(self) -> list[str]:
        return [m[0] for m in self.sent]


def pump(engine: Engine, transport: RecordingTransport, limit: int = 100) -> int:
    """Deliver queued run_step messages until none is left; returns how many ran."""
    ran = 0
    while transport.steps:
        job_uuid, attempt = transport.steps.popleft()
        engine.run_step(job_uuid, attempt)
        ran += 1
        assert ran < limit, "the job does not settle"
    return ran


def ok(result: dict[str, Any] | None = None, server_uuid: str = "") -> dict[str, Any]:
    return {"ok": True, "result": result or {}, "server_uuid": server_uuid,
            "started_at": 0, "finished_at": 0}


def batch(*outcomes: dict[str, Any]) -> dict[str, Any]:
    """What an agent answers to ``agent.batch``: the outcome of each operation that ran."""
    return ok({"outcomes": list(outcomes)})


def failed(code: str = "AgentError", message: str = "it broke") -> dict[str, Any]:
    return {"ok": False, "result": None, "error": {"code": code, "message": message},
            "server_uuid": "", "started_at": 0, "finished_at": 0}


def get_job(ctx: Any, job_uuid: str) -> Job:
    with ctx.read() as session:
        job = session.get(Job, job_uuid)
        assert job is not None
        return job


def get_machine(ctx: Any, machine_uuid: str) -> Machine:
    with ctx.read() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        return machine


@pytest.fixture
def transport(ctx: Any) -> RecordingTransport:
    return RecordingTransport(ctx.sessions)


@pytest.fixture
def engine(ctx: Any, transport: RecordingTransport) -> Engine:
    return Engine(ctx.settings, ctx.sessions, transport)


@pytest.fixture
def fleet(ctx: Any) -> dict[str, Any]:
    return {
        "server": make_server(ctx, hostname="cn1"),
        "package": make_package(ctx, name="small", memory=1024, disk=10240, cpu_cap=100),
        "image": make_image(ctx, name="base-64"),
        "owner": make_account(ctx, login="alice"),
    }
