"""The worker processes as an operator runs them (issue 9, items 3 and 6), for real.

- One agent per server: a second ``sdc agent run`` for a served server refuses, naming the
  pids that hold the node's lock, and starts once the first is gone.
- ``kill -9`` of an agent's supervising process takes its Celery child with it, so no orphan
  goes on serving the node next to a restarted agent.
- The workflow worker says it is ready, and logs every failed step and every message it
  rejects with the job and server; an agent logs the messages it rejects likewise.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from agents import nodelock
from agents.mockcloud import node_uuid
from schemas.agent import HEADNODE_QUEUE, HEARTBEAT_KEY, agent_queue
from tests.support import credentials
from tests.support.procs import ProcessGroup
from tests.support.wait import wait_until

SDC = str(Path(sys.executable).parent / "sdc")
FAST = {"SDC_HEARTBEAT_INTERVAL": "0.2", "SDC_STATUS_CHECK_INTERVAL": "0.1",
        "SDC_SIM_STATE": "false"}
#: how long an orphaned worker may outlive its killed supervisor
ORPHAN_DEADLINE = 3.0
#: the cloud of the restart test: agents send a full status report every 2 s, so two agents
#: for one server would contradict each other within seconds
CLOUD_ENV = {"SDC_STATUS_INTERVAL": "2"}


def agent_argv(server_uuid: str, redis_url: str, data_dir: Path) -> list[str]:
    credentials.issue(data_dir, [server_uuid])
    return [SDC, "agent", "run", "--backend", "sim", "--server-uuid", server_uuid,
            "--redis-url", redis_url, "--data-dir", str(data_dir)]


def process_lives(pid: int) -> bool:
    """A zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def worker_pid(data_dir: Path, server_uuid: str) -> int:
    """The agent's Celery child, as the agent recorded it in the node's lock file."""
    lines = nodelock.lock_path(data_dir, server_uuid).read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith("worker "))


def start_agent(procs: ProcessGroup, name: str, server_uuid: str, redis_url: str,
                data_dir: Path, client: Any) -> int:
    """Start an agent; returns its worker's pid once the node beats."""
    client.hdel(HEARTBEAT_KEY, server_uuid)
    procs.spawn(name, agent_argv(server_uuid, redis_url, data_dir), env=FAST, timeout=60,
                ready=lambda: client.hget(HEARTBEAT_KEY, server_uuid))
    return worker_pid(data_dir, server_uuid)


def test_a_second_agent_for_a_served_server_is_refused_until_the_first_is_gone(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    server_uuid = str(uuid.uuid4())
    data_dir = tmp_path / "agent"
    client = redis_server.client()
    first = start_agent(procs, "first", server_uuid, clean_redis, data_dir, client)

    second = subprocess.run(agent_argv(server_uuid, clean_redis, data_dir),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert f"server {server_uuid} is already served by another agent" in second.stderr
    assert f"pid {procs.procs['first'].pid} (agent)" in second.stderr
    assert f"pid {first} (worker)" in second.stderr
    assert procs.procs["first"].alive() and process_lives(first)

    procs.stop("first", grace=30)
    start_agent(procs, "second", server_uuid, clean_redis, data_dir, client)
    assert "Traceback" not in procs.log("second")


def test_a_mock_cloud_overlapping_a_running_one_is_refused(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    client = redis_server.client()
    argv = [SDC, "mockcloud", "--servers", "2", "--prefix", "lk", "--redis-url", clean_redis,
            "--data-dir", str(tmp_path / "mock")]
    credentials.issue_mockcloud(tmp_path / "mock", 3, "lk")  # also the one-more cloud's
    procs.spawn("mock", argv, env=FAST, timeout=60, ready=lambda: client.hlen(HEARTBEAT_KEY) == 2)
    bigger = [*argv[:3], "3", *argv[4:]]  # one node more: the first two are taken
    refused = subprocess.run(bigger, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"server {node_uuid('lk', 0)} is already served by another agent" in refused.stderr
    # nothing of the refused cloud is left holding the third node
    nodelock.release(nodelock.acquire(tmp_path / "mock", [node_uuid("lk", 2)]))


def test_kill_9_of_the_agent_takes_its_worker_with_it(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    server_uuid = str(uuid.uuid4())
    data_dir = tmp_path / "agent"
    client = redis_server.client()
    worker = start_agent(procs, "agent", server_uuid, clean_redis, data_dir, client)

    procs.kill("agent", group=False)  # the supervising process only, as an OOM kill would
    killed_at = time.monotonic()
    wait_until(lambda: not process_lives(worker), timeout=ORPHAN_DEADLINE, interval=0.01,
               message=f"the orphaned worker {worker} to die")
    print(f"orphaned worker gone {time.monotonic() - killed_at:.3f} s after kill -9")

    # the node is free at once: a restarted agent serves it
    start_agent(procs, "restarted", server_uuid, clean_redis, data_dir, client)


def test_the_workflow_worker_logs_failed_steps_and_rejected_messages(
    procs: ProcessGroup, settings: Any, ctx: Any
) -> None:
    from workflows import machines  # noqa: F401 - registers the provision workflow
    from workflows.engine import new_job

    server_uuid = str(uuid.uuid4())
    with ctx.transaction() as session:
        # a provision of a machine that does not exist: its validate step fails
        job = new_job(session, "provision", machine_uuid=None, server_uuid=server_uuid,
                      owner_uuid=None)
        session.flush()
        job_uuid, attempt = job.uuid, job.attempt
    env = {"SDC_DATABASE_URL": settings.database_url, "SDC_REDIS_URL": settings.redis_url,
           "SDC_DATA_DIR": str(settings.data_dir), "SDC_MESSAGE_KEY": settings.message_key}
    procs.spawn("worker", [SDC, "headnode", "worker"], env=env, timeout=60,
                ready=lambda: " ready." in procs.log("worker"))

    sender = Celery("test-sender", broker=settings.redis_url, set_as_current=False)
    stranger = str(uuid.uuid4())
    try:
        sender.send_task("workflows.run_step", args=[job_uuid, attempt], queue=HEADNODE_QUEUE)
        # malformed: an unknown task; a step message without its attempt
        sender.send_task("events.no_such_event", queue=HEADNODE_QUEUE,
                         args=[{"job_uuid": stranger, "server_uuid": server_uuid}])
        sender.send_task("workflows.run_step", args=[stranger], queue=HEADNODE_QUEUE)
    finally:
        sender.close()

    def logged(*words: str) -> bool:
        return any(all(w in line for w in words) for line in procs.log("worker").splitlines())

    wait_until(lambda: logged(job_uuid, server_uuid, "step validate failed"), timeout=30,
               message=lambda: f"the failed step in the log:\n{procs.log('worker')}")
    wait_until(lambda: logged("rejected", "events.no_such_event", stranger, server_uuid),
               timeout=30, message="the unknown task in the log")
    wait_until(lambda: logged("workflows.run_step", "failed", stranger, "TypeError"),
               timeout=30, message="the step message without its attempt in the log")

    # Not even a message: kombu cannot read it and Celery's consumer gives up. The worker says
    # so and a fresh one takes over.
    redis.Redis.from_url(settings.redis_url).lpush(HEADNODE_QUEUE, b"this is not json")
    wait_until(lambda: logged("Unrecoverable error", "JSONDecodeError"), timeout=30,
               message="the unreadable message in the log")
    wait_until(lambda: procs.log("worker").count(" ready.") == 2, timeout=60,
               message="a fresh worker")
    assert procs.procs["worker"].alive()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found.extend(int(child) for child in text.split())
    return found


def test_kill_9_of_the_workflow_worker_takes_its_celery_child_with_it(
    procs: ProcessGroup, settings: Any
) -> None:
    env = {"SDC_DATABASE_URL": settings.database_url, "SDC_REDIS_URL": settings.redis_url,
           "SDC_DATA_DIR": str(settings.data_dir), "SDC_MESSAGE_KEY": settings.message_key}
    worker = procs.spawn("worker", [SDC, "headnode", "worker"], env=env, timeout=60,
                         ready=lambda: " ready." in procs.log("worker"))
    # the Celery worker and the node-event consumer (SDC_EVENT_CONSUMERS=1 by default)
    wait_until(lambda: len(children(worker.pid)) == 2, timeout=30,
               message="the worker's two children")
    kids = children(worker.pid)
    procs.kill("worker", group=False)
    wait_until(lambda: not any(process_lives(child) for child in kids),
               timeout=ORPHAN_DEADLINE, interval=0.01,
               message=f"the orphaned children {kids} to die")


def test_an_agent_logs_the_messages_it_rejects(
    procs: ProcessGroup, clean_redis: str, redis_server: Any, tmp_path: Path
) -> None:
    server_uuid = str(uuid.uuid4())
    job_uuid = str(uuid.uuid4())
    start_agent(procs, "agent", server_uuid, clean_redis, tmp_path / "agent",
                redis_server.client())
    sender = Celery("test-sender", broker=clean_redis, set_as_current=False)
    try:
        sender.send_task("agent.no_such_op", queue=agent_queue(server_uuid),
                         args=[server_uuid, {}, {"job_uuid": job_uuid, "step": 0,
                                                 "attempt": 1}])
    finally:
        sender.close()
    wait_until(lambda: any("rejected" in line and job_uuid in line and server_uuid in line
                           for line in procs.log("agent").splitlines()),
               timeout=30, message="the rejected message in the agent's log")


def test_an_agent_restarted_after_kill_9_is_the_only_one_and_loses_no_machine(
    cloud: Any
) -> None:
    """The incident: the agent's supervisor is killed with SIGKILL and started again at once
    (systemd's Restart=always). Machines made before and after the restart stay running."""
    cloud.seed()
    server_uuid = cloud.agents["agent0"]
    data_dir = cloud.workdir / "agent0"

    def provision(count: int) -> list[str]:
        machines = [cloud.api.post("/ops/machines", {
            "owner": "alice", "package": "small", "image": "base-64",
            "server_uuid": server_uuid}) for _ in range(count)]
        for machine in machines:
            assert cloud.wait_job(machine["job_uuid"])["execution"] == "succeeded"
        return [m["uuid"] for m in machines]

    before = provision(3)
    old_worker = worker_pid(data_dir, server_uuid)
    cloud.procs.kill("agent0", group=False)  # the supervisor only
    cloud.procs.procs["agent0"].popen.wait(timeout=10)
    cloud.start_agent(0, server_uuid)
    wait_until(lambda: not process_lives(old_worker), timeout=ORPHAN_DEADLINE,
               message="the old worker to die")
    wait_until(lambda: worker_pid(data_dir, server_uuid) != old_worker, timeout=30,
               message="the restarted agent's worker")
    after = provision(3)

    time.sleep(3 * 2)  # three full status reports
    states = {uuid: cloud.api.get(f"/ops/machines/{uuid}")["state"] for uuid in before + after}
    assert set(states.values()) == {"running"}, states
    assert cloud.procs.procs["agent0"].alive()
    # and the doctor finds nothing: no orphan, missing record, drift or leak
    wait_until(lambda: cloud.api.get("/ops/doctor")["findings"] == [], timeout=30,
               message=lambda: f"sdc doctor to find nothing: {cloud.api.get('/ops/doctor')}")
