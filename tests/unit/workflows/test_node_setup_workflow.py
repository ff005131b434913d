"""The ``server_setup`` job run by the engine in this process, on the real PostgreSQL and
Redis, against a real sshd standing for the node (its PREFIX a directory of the test's): the
failures an operator meets (a host key not trusted, a node that lacks what its backend
needs, a forgotten uuid, a setup that fails after installing) stop the job at the step that
found them and leave the node as it was. A setup that succeeds, run twice, and the
upgrade and rollback jobs are tested end to end in tests/integration/test_node_setup.py."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headnode.services import node_setup, revocation
from headnode.services.context import ServiceContext
from headnode.ssh.keys import head_key, public_line
from headnode.store.models import Server
from tests.support.jobqueue import RecordingJobQueue
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, start_sshd
from tests.unit.workflows.conftest import RecordingTransport, get_job, pump
from workflows import node_setup as node_setup_workflow
from workflows.engine import Engine

CALLER = {"type": "operator"}


@pytest.fixture
def head(settings: Any, bundle_dir: Path, tmp_path: Path) -> ServiceContext:
    from workflows.registry import load_all

    load_all()
    return ServiceContext(dataclasses.replace(settings, agent_bundle_dir=str(bundle_dir),
                                              data_dir=tmp_path / "head"),
                          jobs=RecordingJobQueue())


@pytest.fixture
def node(procs: ProcessGroup, tmp_path: Path, head: ServiceContext) -> Iterator[Sshd]:
    sshd = start_sshd(procs, tmp_path / "nodes", "node1",
                      [public_line(head_key(head.settings.data_dir))])
    yield sshd
    stop_agent(prefix_of(tmp_path))


def prefix_of(tmp_path: Path) -> Path:
    return tmp_path / "node-root"


def stop_agent(prefix: Path) -> None:
    """The agent runs detached under its supervisor: stop the supervisor's group."""
    pidfile = prefix / "var/lib/sdc/agent.pid"
    with contextlib.suppress(OSError, ValueError):
        os.killpg(int(pidfile.read_text().split()[0]), signal.SIGTERM)


def run_setup(head: ServiceContext, node: Sshd, prefix: Path, **request: Any) -> Any:
    body = {"host": "127.0.0.1", "port": node.port, "user": node.user,
            "prefix": str(prefix), "backend": "sim", "pool": "", "nic_tags": "",
            "hostname": "", "accept_new_host_key": True, "version": None, **request}
    started = node_setup.start_setup(head, body, CALLER)
    return run_job(head, started["job_uuid"])


def run_job(head: ServiceContext, job_uuid: str) -> Any:
    transport = RecordingTransport(head.sessions)
    engine = Engine(head.settings, head.sessions, transport)
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    return get_job(head, job_uuid)


def names(entries: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries]


def test_an_untrusted_host_key_stops_at_inspect_and_changes_nothing(
        head: ServiceContext, node: Sshd, tmp_path: Path) -> None:
    job = run_setup(head, node, prefix_of(tmp_path), accept_new_host_key=False)
    assert job.execution == "failed"
    assert names(job.chain_results) == ["prepare_bundle", "inspect"]
    assert job.error["step"] == "inspect" and job.error["code"] == "HostKeyUnknown"
    assert "--accept-new-host-key" in job.error["message"]
    assert job.onerror_results[0]["result"]["changed"] is False
    assert not prefix_of(tmp_path).exists()
    bundle = job.chain_results[0]["result"]
    assert bundle["wheels"] > 1 and bundle["version"].startswith("0.")


def test_a_node_that_lacks_its_backends_tools_is_told_everything_missing(
        head: ServiceContext, node: Sshd, tmp_path: Path) -> None:
    job = run_setup(head, node, prefix_of(tmp_path), backend="smartos")
    assert job.error["step"] == "inspect" and job.error["code"] == "NodeNotReady"
    for missing in ("SunOS", "vmadm", "zfs"):
        assert missing in job.error["message"]
    assert not (prefix_of(tmp_path) / "opt").exists()


def test_a_forgotten_uuid_is_refused(head: ServiceContext, node: Sshd,
                                     tmp_path: Path) -> None:
    gone = "4d0c0f6e-9d0c-4d3f-9b1e-2a2b2c2d2e2f"
    env = prefix_of(tmp_path) / "etc/sdc/agent.env"
    env.parent.mkdir(parents=True)
    env.write_text(f"SDC_SERVER_UUID={gone}\n")
    with head.transaction() as session:
        revocation.revoke(session, gone, "old-node")
    job = run_setup(head, node, prefix_of(tmp_path))
    assert (job.error["step"], job.error["code"]) == ("inspect", "ServerRevoked")
    assert str(env) in job.error["message"]
    assert env.read_text() == f"SDC_SERVER_UUID={gone}\n"


def test_a_setup_that_fails_late_leaves_the_node_as_it_was(
        head: ServiceContext, node: Sshd, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker takes the agent's registration here: wait_heartbeat gives up (after 2 s
    instead of 120), and restore takes away all the job put on the node."""
    monkeypatch.setattr(node_setup_workflow, "HEARTBEAT_WAIT", 2.0)
    prefix = prefix_of(tmp_path)
    prefix.mkdir()
    job = run_setup(head, node, prefix)
    assert job.execution == "failed"
    assert (job.error["step"], job.error["code"]) == ("wait_heartbeat", "NoHeartbeat")
    assert "it has not registered" in job.error["message"]
    assert names(job.onerror_results) == ["restore"]
    assert job.onerror_results[0]["error"] is None, job.onerror_results
    assert list(prefix.iterdir()) == []  # the agent stopped, its release and config gone
    with head.read() as session:
        assert session.query(Server).count() == 0
